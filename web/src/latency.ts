// The latency panel: for each bot reply, the end of the person's speech → the reply's first
// audible sample, and its first mouth shape shown → that sample (+ = mouth late).
import type { ScheduledChunk } from "./lipsync/scheduler";

export interface TurnLatency {
  turnId: string;
  responseMs: number | null; // end of the user's speech -> first audible bot sample
  lipSyncMs: number | null; // first mouth shape - first audible sample (+ = mouth late)
}

export class LatencyTracker {
  // the reply being measured: filled in as its first sound is heard and first shown
  private pending: { turnId: string; userEnd: number; chunk: ScheduledChunk; onset: number | null } | null = null;

  /** A reply's first chunk is scheduled; `userEnd` is when the person was last heard. */
  replyStarts(turnId: string, userEnd: number, chunk: ScheduledChunk): void {
    this.pending = { turnId, userEnd, chunk, onset: null };
  }

  /** A voice onset heard at `t`; `alignedTurn`: the reply it was matched to, if any. */
  onsetHeard(t: number, alignedTurn: string | null): void {
    const p = this.pending;
    if (p && p.onset === null && (alignedTurn === null || alignedTurn === p.turnId)) p.onset = t;
  }

  /** Every frame: once the reply's first shape is on screen, its figures (once). */
  frame(now: number): TurnLatency | null {
    const p = this.pending;
    if (p?.onset == null || p.chunk.voiced === null || now < p.chunk.voiced) return null;
    this.pending = null;
    return {
      turnId: p.turnId,
      responseMs: p.userEnd > 0 ? Math.round(p.onset - p.userEnd) : null,
      lipSyncMs: Math.round(now - p.onset),
    };
  }
}
