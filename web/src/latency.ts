// The latency panel: for each bot reply, the end of the person's speech → the reply's first
// audible sample, and its first mouth shape shown → that sample (+ = mouth late). A reply that
// comes without timing messages (a bot that sends none) still gets its response time.
import type { ScheduledChunk } from "./lipsync/scheduler";

export interface TurnLatency {
  turnId: string; // "" for a reply without timing messages
  responseMs: number | null; // end of the user's speech -> first audible bot sample
  lipSyncMs: number | null; // first mouth shape - first audible sample (+ = mouth late)
}

export class LatencyTracker {
  // the reply being measured: filled in as its first sound is heard and first shown
  private pending: { turnId: string; userEnd: number; chunk: ScheduledChunk; onset: number | null } | null = null;
  // the end of speech the last measured reply answered: one reply per time the person spoke
  private answered = 0;
  private untimed: TurnLatency | null = null;

  /** A reply's first chunk is scheduled; `userEnd` is when the person was last heard. */
  replyStarts(turnId: string, userEnd: number, chunk: ScheduledChunk): void {
    this.pending = { turnId, userEnd, chunk, onset: null };
    this.answered = Math.max(this.answered, userEnd);
  }

  /** A voice onset heard at `t`; `alignedTurn`: the reply it was matched to, if any; `userEnd`:
   *  when the person was last heard. The first onset after they spoke, with no reply of timing
   *  messages to match, is a reply without timings. */
  onsetHeard(t: number, alignedTurn: string | null, userEnd = 0): void {
    const p = this.pending;
    if (p) {
      if (p.onset === null && (alignedTurn === null || alignedTurn === p.turnId)) p.onset = t;
      return;
    }
    if (alignedTurn === null && userEnd > this.answered && t > userEnd) {
      this.answered = userEnd;
      this.untimed = { turnId: "", responseMs: Math.round(t - userEnd), lipSyncMs: null };
    }
  }

  /** Every frame: once the reply's first shape is on screen, its figures (once). */
  frame(now: number): TurnLatency | null {
    if (this.untimed) {
      const done = this.untimed;
      this.untimed = null;
      return done;
    }
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
