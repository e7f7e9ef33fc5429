// Turns the bot's timing messages (docs/protocol.md) into viseme and word cues on the page clock
// (performance.now() milliseconds), placed at the moment the chunk's audio is *heard*:
//
//   heard(chunk) = arrival + lead_ms + receive delay     (first chunk of a turn, or after a gap)
//   heard(chunk) = heard(turn start) + offset_ms         (chunks that follow back to back)
//
// The receive delay (jitter buffer + playout + output latency) comes from ReceiveDelay. Where a
// chunk's place is only predicted that way (a turn's first chunk, or one after a gap in the
// audio), the moment its voice is actually heard — an onset in the played track, found on the
// audio thread — corrects the prediction: `align()`. The mouth shapes themselves always come from
// the model's durations. Later onsets keep the rest of the turn in step: one that ends a pause
// the bot announced (`ptimes`; the jitter buffer stretches pauses) moves what follows onto it,
// one inside scheduled voice ends a hole (the sender fell behind) and moves what follows by the
// hole's length: `align()` again. This module is pure so its rules are unit-tested.
import { ONSET_RULE } from "../gen/onset";
import type { SpeechChunkMessage, SpeechStopMessage } from "../gen/protocol";

export type Viseme = SpeechChunkMessage["visemes"][number];

export interface VisemeCue {
  viseme: Viseme;
  start: number; // page clock, ms
  duration: number;
}

export interface WordCue {
  word: string;
  start: number;
  duration: number;
  index: number; // position within the turn's words
}

export interface ScheduledChunk {
  turnId: string;
  seq: number;
  start: number; // when the chunk's first sample is heard
  end: number;
  visemes: VisemeCue[];
  words: WordCue[];
  estimated: boolean; // timings guessed from text (the chunk came without model timings)
  late: number; // ms of the chunk already heard when its message was scheduled (cues dropped)
  anchored: boolean; // placed by its own message (not chained): align() may correct it
  voiced: number | null; // when its voice becomes audible (onset_ms, else its first non-silent viseme)
  aligned: boolean; // its start was put on a heard onset (align(), or an early onset at add())
  shift: number; // the correction that moved its start onto the heard onset, ms (0: none needed)
  drift: number; // ms its later cues moved since (pauses heard longer or shorter, holes)
  pauses: Pause[]; // its quiet stretches, as the page should hear them
}

export interface Pause {
  start: number;
  end: number; // the onset of the voice after it
  used: boolean; // matched with a heard onset already
}

/** Visemes for a text laid over a duration, e.g. TalkingHead's own text-based lip-sync. */
export type TextLipSync = (word: string) => { visemes: string[]; times: number[]; durations: number[] };

/** A chunk whose lead_ms is below this was sent into an empty audio queue: a gap preceded it. */
export const UNDERRUN_LEAD_MS = 5;
/** When the back-to-back position and the message's own anchor disagree by more than this, the
 * audio has drifted from the turn's start (lost packets, a stall): trust the message. */
export const REANCHOR_MS = 250;
/** An onset this close to an anchored chunk's first voiced sound is that sound: up to
 * ALIGN_EARLY_MS before the predicted moment, up to ALIGN_LATE_MS after it (a loaded receiver
 * plays out later than its stats say, rarely sooner). */
export const ALIGN_EARLY_MS = 400;
export const ALIGN_LATE_MS = 1000;
/** The onset rule: voice after at least this much quiet (stack/lipsync.py, via src/gen/onset.ts). */
export const PAUSE_MIN_MS = ONSET_RULE.pauseMinMs;
/** A heard onset ends an announced pause when that pause overlaps the quiet just heard (give or
 * take PAUSE_SLACK_MS) and its own onset is at most RESYNC_MAX_MS away. */
export const PAUSE_SLACK_MS = 100;
export const RESYNC_MAX_MS = 600;
/** The level detector calls a fading sound quiet up to this long before its viseme ends. */
export const QUIET_FADE_MS = 40;
/** Holes longer than this are not waited for: the sender keeps a second of audio queued, so a
 * longer quiet inside a turn is a lost turn or a stray sound, not a delay. */
export const STALL_MAX_MS = 1200;
/** Mouth shapes are shown this much before their sound is heard. Broadcast sync (ATSC IS-191)
 * accepts a mouth up to 45 ms early but only 15 ms late: its centre is 15 ms early. A display
 * shows a shape on its next frame, 0-17 ms (8 on average) after its time at 60 Hz. Aiming 25 ms
 * early puts the shown shape near the window's centre, where the scheduling's own spread (a few
 * tens of ms, docs/benchmarks.md) stays inside it; speech itself moves the lips before the sound. */
export const MOUTH_LEAD_MS = 25;

/** The cues as the avatar should show them: `leadMs` before they are heard. The schedule itself
 * stays on the heard timeline (onsets and pauses are matched there). */
export function mouthCues(cues: VisemeCue[], leadMs = MOUTH_LEAD_MS): VisemeCue[] {
  return cues.map((c) => ({ ...c, start: c.start - leadMs }));
}

/** A message can arrive after its audio began (the page's main thread was busy): an onset heard
 * up to this long before an anchored chunk's message, matched by nothing, is that chunk's. */
export const EARLY_ONSET_MS = 1000;

/** After an interruption, the mouth goes on with the voice already on its way for at most this
 * long (0.3-0.7 s was heard after the stop message in the browser tests). */
export const STOP_TAIL_MAX_MS = 2000;

interface Turn {
  base: number; // heard time of the turn's offset 0
  words: number; // words scheduled so far
  stopAt: number | null; // stopped (speech.stop): where its voice ends, on the heard timeline,
  // moving with it; null while the turn goes on
}

export class SpeechScheduler {
  private turns = new Map<string, Turn>();
  private chunks: ScheduledChunk[] = [];
  private onsets: number[] = []; // heard onsets no chunk has claimed yet
  private latest: string | null = null; // the turn scheduled last

  /** `onAligned`: an anchored chunk (placed by the receive delay) was put on its heard onset,
   * `chunk.shift` ms from where it was placed: the receive delay's error (ReceiveDelay.learn).
   * Not for a chunk placed on an onset heard before its message came: that message was late
   * (the page busy), which says nothing about the delay. */
  constructor(private readonly textLipSync: TextLipSync | null = null,
    private readonly onAligned: ((chunk: ScheduledChunk) => void) | null = null) {}

  /** Schedules one chunk; null when its turn was already stopped. */
  add(msg: SpeechChunkMessage, arrival: number, receiveDelay: number): ScheduledChunk | null {
    const anchor = arrival + msg.lead_ms + receiveDelay;
    let turn = this.turns.get(msg.turn_id);
    if (turn && turn.stopAt !== null) return null;
    let anchored = true;
    if (!turn) {
      // a new turn ends whatever is left of older ones (the bot speaks one turn at a time)
      for (const [id, t] of this.turns) if (t.stopAt === null) this.cut(id, anchor);
      turn = { base: anchor - msg.offset_ms, words: 0, stopAt: null };
      this.turns.set(msg.turn_id, turn);
      this.latest = msg.turn_id;
    } else if (msg.lead_ms < UNDERRUN_LEAD_MS || Math.abs(turn.base + msg.offset_ms - anchor) > REANCHOR_MS) {
      turn.base = anchor - msg.offset_ms;
    } else {
      anchored = false;
    }
    const voicedAt = msg.onset_ms ?? firstVoiced(msg);
    let shift = 0;
    const early = anchored && voicedAt !== null
      ? this.onsets.filter((o) => o <= arrival && arrival - o <= EARLY_ONSET_MS).at(-1) : undefined;
    if (early !== undefined) {
      shift = early - (turn.base + msg.offset_ms + voicedAt!);
      turn.base += shift;
      this.onsets = this.onsets.filter((o) => o !== early);
    }
    const start = turn.base + msg.offset_ms;
    const estimated = msg.visemes.length === 0 && this.textLipSync !== null;
    const timed = estimated ? estimateTimings(msg, this.textLipSync!) : msg;
    const chunk: ScheduledChunk = {
      turnId: msg.turn_id, seq: msg.seq, start, end: start + msg.duration_ms, estimated,
      late: Math.max(0, arrival - start), anchored, voiced: null, aligned: early !== undefined,
      shift, drift: 0,
      pauses: (msg.ptimes ?? []).map((p, i) => ({ start: start + p, end: start + p + msg.pdurations[i], used: false })),
      visemes: timed.visemes.map((v, i) => ({ viseme: v as Viseme, start: start + timed.vtimes[i], duration: timed.vdurations[i] })),
      words: timed.words.map((w, i) => ({ word: w, start: start + timed.wtimes[i], duration: timed.wdurations[i], index: turn.words + i })),
    };
    turn.words += msg.words.length;
    chunk.voiced = voicedAt === null ? null : start + voicedAt;
    // a late message: what was already heard cannot be mouthed any more; start mid-chunk
    chunk.visemes = chunk.visemes.filter((c) => c.start + c.duration > arrival);
    this.chunks.push(chunk);
    return chunk;
  }

  /** speech.stop: the turn's later chunks are ignored, and its mouth stops where its voice will:
   * the voice the bot had sent (`sent_ms`, on the turn's clock) is still on its way and will be
   * heard, for at most STOP_TAIL_MAX_MS; without `sent_ms`, now. Returns when the mouth stops;
   * an onset may still move that (`align`, `stopsAt`). */
  stop(msg: SpeechStopMessage, now: number): number {
    const turn = this.turns.get(msg.turn_id);
    const sent = msg.sent_ms ?? null;
    const at = turn && turn.stopAt === null && sent !== null
      ? Math.min(now + STOP_TAIL_MAX_MS, Math.max(now, turn.base + sent)) : now;
    this.cut(msg.turn_id, at);
    if (turn) turn.stopAt ??= at;
    else this.turns.set(msg.turn_id, { base: now, words: 0, stopAt: now });
    return at;
  }

  /** The bot's voice has been quiet since `from` for `quietMs` (at least PAUSE_MIN_MS). When the
   * turn stopped last was to be heard after `from`, in a chunk placed on its heard onset whose
   * voice began before `from`, and that chunk had voice (not a pause) in the quiet: what was on
   * its way has been heard already (the receiver dropped some, or the chunk was placed late), so
   * its voice ended at `from`, and so does its mouth. Returns that, or null. */
  voiceEnded(from: number, quietMs: number): number | null {
    const turn = this.latest === null ? undefined : this.turns.get(this.latest);
    if (!turn || turn.stopAt === null || turn.stopAt <= from || quietMs < PAUSE_MIN_MS) return null;
    // the chunk the stop falls in: an earlier one's voice had ended before its successor came
    const c = this.chunks.filter((x) => x.turnId === this.latest && x.start < turn.stopAt!).at(-1);
    if (!c || !c.aligned || c.voiced === null || from <= c.voiced) return null;
    const lo = from + QUIET_FADE_MS, hi = from + quietMs;
    if (!c.visemes.some((v) => v.viseme !== "sil" && v.start < hi && v.start + v.duration > lo)) return null;
    this.cut(c.turnId, from);
    turn.stopAt = from;
    return from;
  }

  /** Where a stopped turn's voice ends (its mouth closes), or null for a turn not stopped. */
  stopsAt(turnId: string): number | null {
    return this.turns.get(turnId)?.stopAt ?? null;
  }

  /** A voice onset heard at `t` after `quietMs` of quiet. When it is the first audible sound of
   * an anchored chunk not yet aligned, moves that chunk and the rest of its turn onto it (also
   * in a turn just stopped, when that sound was sent before the stop: the voice still on its way
   * comes later than predicted, and so must the mouth's close); when it ends a hole in the
   * middle of scheduled voice, moves what was not heard yet by the hole's length. Returns the
   * chunk it moved, or null. */
  align(t: number, quietMs = 0): ScheduledChunk | null {
    const c = this.chunks.find((x) => x.anchored && !x.aligned && x.voiced !== null
      && t - x.voiced >= -ALIGN_EARLY_MS && t - x.voiced <= ALIGN_LATE_MS
      && (this.live(x) || this.onItsWay(x)));
    if (c) {
      const shift = t - c.voiced!;
      this.move(c.turnId, { from: -Infinity, by: shift, fromSeq: c.seq });
      for (const x of this.chunks) {
        if (x.turnId === c.turnId && x.seq >= c.seq) Object.assign(x, { shift, aligned: true });
      }
      for (const p of c.pauses) if (Math.abs(p.end - c.voiced!) < 1) p.used = true; // this onset's
      this.onAligned?.(c);
      return c;
    }
    const resynced = quietMs >= PAUSE_MIN_MS ? this.pauseEnding(t, quietMs) ?? this.holeBefore(t, quietMs) : null;
    if (resynced) return resynced;
    // a pause inside scheduled speech is not a new chunk's start: keep only onsets in silence
    const inSpeech = this.chunks.some((x) => t >= x.start - 100 && t <= x.end + 100);
    if (!inSpeech) this.onsets = [...this.onsets.filter((o) => t - o <= EARLY_ONSET_MS), t];
    return null;
  }

  /** The heard onset `t` ends an announced pause (the quiet heard since `t - quietMs` overlaps
   * it): what follows that pause moves onto `t`. */
  private pauseEnding(t: number, quietMs: number): ScheduledChunk | null {
    const q = t - quietMs;
    let best: { c: ScheduledChunk; p: Pause } | null = null;
    for (const c of this.chunks) {
      if (!this.live(c)) continue;
      for (const p of c.pauses) {
        if (p.used || p.start > t + PAUSE_SLACK_MS || p.end < q - PAUSE_SLACK_MS
          || Math.abs(t - p.end) > RESYNC_MAX_MS) continue;
        if (!best || Math.abs(t - p.end) < Math.abs(t - best.p.end)) best = { c, p };
      }
    }
    if (!best) return null;
    best.p.used = true;
    const shift = t - best.p.end;
    if (shift !== 0) this.move(best.c.turnId, { from: best.p.end, by: shift, drift: true });
    return best.c;
  }

  /** No announced pause, but the voice went quiet at `t - quietMs` where the schedule had voice:
   * the sender fell behind, and what follows is heard `quietMs` later. */
  private holeBefore(t: number, quietMs: number): ScheduledChunk | null {
    if (quietMs > STALL_MAX_MS) return null;
    const q = t - quietMs;
    const c = this.chunks.find((x) => q >= x.start && q < x.end && this.live(x));
    if (!c) return null;
    const v = this.visemeAt(q + QUIET_FADE_MS);
    if (v === null || v === "sil") return null;
    this.move(c.turnId, { from: q, by: quietMs, drift: true });
    return c;
  }

  /** The received audio is heard `byMs` later (< 0: sooner) from `at` on: the jitter buffer
   * stretched or squeezed it (PlayoutStretch). Moves what the live turn has not yet had heard
   * by as much; returns a chunk of that turn, or null when no turn is under way. */
  stretch(at: number, byMs: number): ScheduledChunk | null {
    if (byMs === 0) return null;
    const c = this.chunks.find((x) => x.end > at && this.live(x) && x.visemes.length > 0);
    if (!c) return null;
    this.move(c.turnId, { from: at, by: byMs, drift: true });
    return c;
  }

  /** Whether the chunk's turn may still move (not stopped by speech.stop). */
  private live(c: ScheduledChunk): boolean {
    return this.stopsAt(c.turnId) === null;
  }

  /** A chunk of the turn stopped last, whose first sound the bot had sent before the stop. */
  private onItsWay(c: ScheduledChunk): boolean {
    const stopAt = this.turns.get(c.turnId)?.stopAt ?? null;
    return c.turnId === this.latest && stopAt !== null && c.voiced !== null && c.voiced < stopAt;
  }

  /** Moves a turn's cues that start at or after `from` (only in its chunks from `fromSeq` on,
   * when given) by `by`; `drift`: a correction after the turn's start, counted in each chunk it
   * moves. */
  private move(turnId: string, { from, by, fromSeq = -1, drift = false }:
    { from: number; by: number; fromSeq?: number; drift?: boolean }): void {
    for (const x of this.chunks) {
      if (x.turnId !== turnId || x.seq < fromSeq || x.end <= from) continue;
      if (x.start >= from) x.start += by;
      x.end += by;
      if (drift) x.drift += by;
      if (x.voiced !== null && x.voiced >= from) x.voiced += by;
      x.pauses = x.pauses.map((p) => (p.start >= from ? { ...p, start: p.start + by, end: p.end + by }
        : p.end >= from ? { ...p, end: p.end + by } : p));
      // a mouth shape cut by the hole: what is left of it comes back with the voice
      x.visemes = x.visemes.flatMap((v) => {
        if (v.start >= from) return [{ ...v, start: v.start + by }];
        if (v.start + v.duration <= from) return [v];
        return [{ ...v, duration: from - v.start }, { ...v, start: from + by, duration: v.start + v.duration - from }];
      });
      x.words = x.words.map((w) => (w.start >= from ? { ...w, start: w.start + by }
        : w.start + w.duration > from ? { ...w, duration: w.duration + by } : w));
    }
    const turn = this.turns.get(turnId)!;
    turn.base += by;
    if (turn.stopAt !== null) turn.stopAt += by;
  }

  /** Every viseme cue still to be heard after `t` (to re-queue them after a correction). */
  visemesAfter(t: number): VisemeCue[] {
    return this.chunks.flatMap((c) => c.visemes.filter((v) => v.start + v.duration > t));
  }

  /** Drops every cue of a turn from `at` on (one cut short at `at`). */
  private cut(turnId: string, at: number): void {
    for (const c of this.chunks) {
      if (c.turnId !== turnId) continue;
      c.visemes = c.visemes.filter((v) => v.start < at).map((v) => ({ ...v, duration: Math.min(v.duration, at - v.start) }));
      c.words = c.words.filter((w) => w.start < at);
      c.end = Math.min(c.end, at);
    }
  }

  /** The viseme heard at `t`, or null in silence. */
  visemeAt(t: number): Viseme | null {
    for (const c of this.chunks) {
      if (t < c.start || t >= c.end) continue;
      for (const v of c.visemes) if (t >= v.start && t < v.start + v.duration) return v.viseme;
    }
    return null;
  }

  /** The word heard at `t` (for highlighting), or null. */
  wordAt(t: number): { turnId: string; word: WordCue } | null {
    for (const c of this.chunks) {
      if (t < c.start || t >= c.end) continue;
      for (const w of c.words) if (t >= w.start && t < w.start + w.duration) return { turnId: c.turnId, word: w };
    }
    return null;
  }

  /** Whether any scheduled speech is still to be heard after `t`. */
  speakingAfter(t: number): boolean {
    return this.chunks.some((c) => c.end > t && c.visemes.length > 0);
  }

  /** Forgets chunks that ended before `t` (keeps memory flat over a long session). */
  prune(t: number): void {
    this.chunks = this.chunks.filter((c) => c.end > t);
    if (this.turns.size > 64) {
      const keep = new Set(this.chunks.map((c) => c.turnId));
      for (const id of this.turns.keys()) if (!keep.has(id)) this.turns.delete(id);
    }
  }
}

function firstVoiced(msg: SpeechChunkMessage): number | null {
  const i = msg.visemes.findIndex((v) => v !== "sil");
  return i < 0 ? null : msg.vtimes[i];
}

/** Text-based fallback: each word's visemes from `textLipSync`, the words spread over the
 * chunk's duration in proportion to their viseme lengths. */
export function estimateTimings(msg: SpeechChunkMessage, textLipSync: TextLipSync) {
  const words = msg.text.split(/\s+/).filter((w) => /[\p{L}\p{N}]/u.test(w));
  const per = words.map((w) => textLipSync(w));
  const lengths = per.map((p) => (p.visemes.length ? p.times[p.times.length - 1] + p.durations[p.durations.length - 1] : 0));
  const total = lengths.reduce((a, b) => a + b, 0);
  const out = { words: [] as string[], wtimes: [] as number[], wdurations: [] as number[], visemes: [] as string[], vtimes: [] as number[], vdurations: [] as number[] };
  if (total <= 0) return out;
  const scale = msg.duration_ms / total;
  let t = 0;
  words.forEach((w, i) => {
    out.words.push(w); out.wtimes.push(t); out.wdurations.push(lengths[i] * scale);
    per[i].visemes.forEach((v, j) => {
      out.visemes.push(v); out.vtimes.push(t + per[i].times[j] * scale); out.vdurations.push(per[i].durations[j] * scale);
    });
    t += lengths[i] * scale;
  });
  return out;
}
