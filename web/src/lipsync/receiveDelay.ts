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
  clockRate?: number; // the audio codec's (Opus: 48 kHz)
}

/** Default until the first two stats reports: a typical Chrome jitter buffer plus playout. */
export const DEFAULT_RECEIVE_DELAY_MS = 60;

export class ReceiveDelay {
  private last: AudioStats | null = null;
  private jitterMs: number | null = null;
  private playoutMs: number | null = null;

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

  get ms(): number {
    if (this.jitterMs === null) return DEFAULT_RECEIVE_DELAY_MS;
    return this.jitterMs + (this.playoutMs ?? this.outputLatencyMs);
  }
}

/** How much later (ms; < 0: sooner) the received audio is heard since the last stats sample,
 * because the jitter buffer stretched or squeezed it: the scheduled mouth follows it. */
export class PlayoutStretch {
  private last: AudioStats | null = null;

  update(s: AudioStats): number {
    const p = this.last;
    this.last = s;
    if (!p || s.removedSamplesForAcceleration === undefined || p.removedSamplesForAcceleration === undefined) return 0;
    const inserted = (s.insertedSamplesForDeceleration ?? 0) - (p.insertedSamplesForDeceleration ?? 0);
    const removed = s.removedSamplesForAcceleration - p.removedSamplesForAcceleration;
    return ((inserted - removed) / (s.clockRate ?? 48_000)) * 1000;
  }
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
    } else if (s.type === "codec" && typeof s.mimeType === "string" && s.mimeType.startsWith("audio/")) {
      out.clockRate = s.clockRate;
    } else if (s.type === "media-playout") {
      out.totalPlayoutDelay = s.totalPlayoutDelay;
      out.totalSamplesCount = s.totalSamplesCount;
    }
  });
  return out;
}
