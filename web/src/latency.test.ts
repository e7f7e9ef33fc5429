import { describe, expect, it } from "vitest";
import { LatencyTracker } from "./latency";
import type { ScheduledChunk } from "./lipsync/scheduler";

const chunk = (voiced: number) => ({ voiced }) as unknown as ScheduledChunk;

describe("LatencyTracker", () => {
  it("measures a reply with timings from the end of speech to its first heard onset", () => {
    const l = new LatencyTracker();
    l.replyStarts("t1", 1000, chunk(2600));
    l.onsetHeard(2500, "t1", 1000);
    expect(l.frame(2550)).toBeNull(); // its first mouth shape is not on screen yet
    expect(l.frame(2620)).toEqual({ turnId: "t1", responseMs: 1500, lipSyncMs: 120 });
    expect(l.frame(2700)).toBeNull(); // once
  });

  it("measures a reply without timing messages once per time the person spoke", () => {
    const l = new LatencyTracker();
    l.onsetHeard(3200, null, 1000);
    expect(l.frame(3210)).toEqual({ turnId: "", responseMs: 2200, lipSyncMs: null });
    l.onsetHeard(4000, null, 1000); // the same reply again after a pause: not a new answer
    expect(l.frame(4010)).toBeNull();
    l.onsetHeard(9000, null, 7000); // the person spoke again
    expect(l.frame(9010)?.responseMs).toBe(2000);
  });

  it("does not count a timed reply's later onsets as untimed replies", () => {
    const l = new LatencyTracker();
    l.replyStarts("t1", 1000, chunk(2600));
    l.onsetHeard(2500, "t1", 1000);
    l.frame(2620);
    l.onsetHeard(5000, null, 1000); // a later sentence of the same reply, not matched
    expect(l.frame(5010)).toBeNull();
  });

  it("ignores an onset before the person has spoken", () => {
    const l = new LatencyTracker();
    l.onsetHeard(500, null, 0);
    expect(l.frame(510)).toBeNull();
  });
});
