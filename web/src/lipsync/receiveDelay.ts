// How long after a sample leaves the bot's audio queue it is heard here, minus the network
// transit the data channel shares: the jitter buffer's current delay plus the playout (output)
// delay, both read from WebRTC's own statistics of the bot's audio track.
export interface AudioStats {
  jitterBufferDelay?: number; // s, summed over emitted samples
  jitterBufferEmittedCount?: number;
  totalPlayoutDelay?: number; // s, summed over played samples (media-playout stats)
  totalSamplesCount?: number;
  // NetEQ's time-stretching (inbound-rtp), in samples at clockRate: audio it squeezed out to
  // shrink the jitter buffer (heard sooner from then on), or stretched in to grow it (later).
  removedSamplesForAcceleration?: number;
  insertedSamplesForDeceleration?: number;
  // Samples NetEQ made up because audio was not there in time (expand), and those of them that
  // were silence or comfort noise (inbound-rtp, at the track's sample rate).
  concealedSamples?: number;
  silentConcealedSamples?: number;
  clockRate?: number; // the audio codec's (Opus: 48 kHz)
}

/** Default until the first two stats reports: a typical Chrome jitter buffer plus playout. */
export const DEFAULT_RECEIVE_DELAY_MS = 60;
/** How far each heard onset moves the correction towards what would have placed its chunk
 * right: halfway, and at most CORRECTION_STEP_MS, so a steady error is learned in a few onsets
 * while one odd onset (the stats' estimate jumping for one chunk under load: 414 ms once in the
 * browser tests) moves the next prediction by little. */
export const CORRECTION_RATE = 0.5;
export const CORRECTION_STEP_MS = 50;
export const MAX_CORRECTION_MS = 500;

export class ReceiveDelay {
  private last: AudioStats | null = null;
  private jitterMs: number | null = null;
  private playoutMs: number | null = null;
  /** What the heard onsets say the stats leave out, ms (< 0: the stats say too much). The
   * stats miss part of the path (in the browser tests, Chrome's voice came ~80 ms after the
   * stats' prediction, 16 of 18 chunks 59-128 ms after it; Firefox's 190 ms before it for a
   * whole turn), and each chunk after a gap is placed by this prediction until its own onset
   * is heard: learned, the mouth starts near its voice there too. */
  private correctionMs = 0;

  constructor(private readonly outputLatencyMs: number = 0) {}

  /** Feeds one stats sample; the delay is the average over the interval since the last one,
   * so it follows the jitter buffer as it grows and shrinks. */
  update(s: AudioStats): void {
    const p = this.last;
    if (p) {
      const jitter = ratio(s.jitterBufferDelay, p.jitterBufferDelay, s.jitterBufferEmittedCount, p.jitterBufferEmittedCount);
      if (jitter !== null) this.jitterMs = jitter * 1000;
      const playout = ratio(s.totalPlayoutDelay, p.totalPlayoutDelay, s.totalSamplesCount, p.totalSamplesCount);
      if (playout !== null) this.playoutMs = playout * 1000;
    }
    this.last = s;
  }

  /** The receive delay to place a chunk with, ms: the stats' estimate plus the correction. */
  get ms(): number {
    const stats = this.jitterMs === null ? DEFAULT_RECEIVE_DELAY_MS : this.jitterMs + (this.playoutMs ?? this.outputLatencyMs);
    return Math.max(0, stats + this.correctionMs);
  }

  get correction(): number {
    return this.correctionMs;
  }

  /** A chunk placed while the correction was `placedWith` was heard `shiftMs` later than placed
   * (< 0: sooner). Chunks placed before the first of them is heard all report the same error:
   * moving towards a target, not adding up errors, counts it once. */
  learn(placedWith: number, shiftMs: number): void {
    const target = Math.min(MAX_CORRECTION_MS, Math.max(-MAX_CORRECTION_MS, placedWith + shiftMs));
    const step = CORRECTION_RATE * (target - this.correctionMs);
    this.correctionMs += Math.min(CORRECTION_STEP_MS, Math.max(-CORRECTION_STEP_MS, step));
  }
}

/** How much later (ms; < 0: sooner) the received audio is heard since the last stats sample,
 * because the jitter buffer stretched or squeezed it, or filled in for packets that came late:
 * the scheduled mouth follows it.
 *
 * Filling in (concealment) counts only where it was audible: NetEQ repeats the last voice,
 * fading, while it waits for a late packet, and that packet is then heard that much later. A
 * hole long enough to go silent is measured on the heard audio instead (the scheduler's
 * hole rule moves what follows by the quiet heard), so counting its silent samples here too
 * would move the mouth twice. Holes between turns are silent and count nowhere. */
export class PlayoutStretch {
  private last: AudioStats | null = null;
  /** The audible concealment in the last interval, ms (part of what update() returned). */
  concealedMs = 0;

  update(s: AudioStats): number {
    const p = this.last;
    this.last = s;
    this.concealedMs = 0;
    if (!p || s.removedSamplesForAcceleration === undefined || p.removedSamplesForAcceleration === undefined) return 0;
    const rate = s.clockRate ?? 48_000;
    const inserted = (s.insertedSamplesForDeceleration ?? 0) - (p.insertedSamplesForDeceleration ?? 0);
    const removed = s.removedSamplesForAcceleration - p.removedSamplesForAcceleration;
    const concealed = delta(s.concealedSamples, p.concealedSamples) - delta(s.silentConcealedSamples, p.silentConcealedSamples);
    this.concealedMs = (Math.max(0, concealed) / rate) * 1000;
    return ((inserted - removed) / rate) * 1000 + this.concealedMs;
  }
}

function delta(a?: number, a0?: number): number {
  return a === undefined || a0 === undefined ? 0 : a - a0;
}

function ratio(a?: number, a0?: number, n?: number, n0?: number): number | null {
  if (a === undefined || a0 === undefined || n === undefined || n0 === undefined) return null;
  return n > n0 ? (a - a0) / (n - n0) : null;
}

/** The audio fields of a track's stats report (inbound-rtp and media-playout entries). */
export function audioStats(report: RTCStatsReport): AudioStats {
  const out: AudioStats = {};
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.jitterBufferDelay = s.jitterBufferDelay;
      out.jitterBufferEmittedCount = s.jitterBufferEmittedCount;
      out.removedSamplesForAcceleration = s.removedSamplesForAcceleration;
      out.insertedSamplesForDeceleration = s.insertedSamplesForDeceleration;
      out.concealedSamples = s.concealedSamples;
      out.silentConcealedSamples = s.silentConcealedSamples;
    } else if (s.type === "codec" && typeof s.mimeType === "string" && s.mimeType.startsWith("audio/")) {
      out.clockRate = s.clockRate;
    } else if (s.type === "media-playout") {
      out.totalPlayoutDelay = s.totalPlayoutDelay;
      out.totalSamplesCount = s.totalSamplesCount;
    }
  });
  return out;
}
