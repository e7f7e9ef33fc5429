import { describe, expect, it } from "vitest";
import { CORRECTION_STEP_MS, DEFAULT_RECEIVE_DELAY_MS, MAX_CORRECTION_MS, PlayoutStretch, ReceiveDelay } from "./receiveDelay";

describe("ReceiveDelay", () => {
  it("uses a typical delay until two stats reports have come", () => {
    const d = new ReceiveDelay(12);
    expect(d.ms).toBe(DEFAULT_RECEIVE_DELAY_MS);
    d.update({ jitterBufferDelay: 10, jitterBufferEmittedCount: 100_000 });
    expect(d.ms).toBe(DEFAULT_RECEIVE_DELAY_MS);
  });

  it("follows the jitter buffer over the last interval, plus the output latency", () => {
    const d = new ReceiveDelay(12);
    d.update({ jitterBufferDelay: 100, jitterBufferEmittedCount: 1_000_000 }); // 100 ms so far
    d.update({ jitterBufferDelay: 100 + 0.04 * 48_000, jitterBufferEmittedCount: 1_048_000 }); // 40 ms now
    expect(d.ms).toBeCloseTo(40 + 12);
  });

  it("prefers WebRTC's own playout delay to the AudioContext's output latency", () => {
    const d = new ReceiveDelay(12);
    d.update({ jitterBufferDelay: 0, jitterBufferEmittedCount: 0, totalPlayoutDelay: 0, totalSamplesCount: 0 });
    d.update({ jitterBufferDelay: 48, jitterBufferEmittedCount: 960, totalPlayoutDelay: 19.2, totalSamplesCount: 960 });
    expect(d.ms).toBeCloseTo(50 + 20);
  });

  it("learns what the heard onsets say the stats miss, halfway and by a bounded step per onset", () => {
    const d = new ReceiveDelay();
    d.update({ jitterBufferDelay: 0, jitterBufferEmittedCount: 0 });
    d.update({ jitterBufferDelay: 48, jitterBufferEmittedCount: 960 }); // 50 ms
    d.learn(d.correction, 80); // heard 80 ms after its prediction
    expect(d.ms).toBeCloseTo(90);
    const placedWith = d.correction;
    d.learn(placedWith, 40); // the next one 40 ms late: 80 ms was right
    expect(d.correction).toBeCloseTo(60);
    // more chunks placed with the same correction before the second was heard say the same:
    // towards 80 ms, never past it (added up, their errors would make it 120 and more)
    for (let i = 0; i < 10; i++) d.learn(placedWith, 40);
    expect(d.correction).toBeCloseTo(80, 0);
    expect(d.correction).toBeLessThanOrEqual(80);
    d.learn(d.correction, 414); // one odd onset moves it by one step only
    expect(d.correction).toBeCloseTo(80 + CORRECTION_STEP_MS, 0);
    for (let i = 0; i < 40; i++) d.learn(d.correction, -2000); // never past -MAX_CORRECTION_MS
    expect(d.correction).toBeCloseTo(-MAX_CORRECTION_MS);
    expect(d.ms).toBe(0); // nor a negative delay
  });

  it("keeps the last value while no audio flows", () => {
    const d = new ReceiveDelay();
    d.update({ jitterBufferDelay: 0, jitterBufferEmittedCount: 0 });
    d.update({ jitterBufferDelay: 30, jitterBufferEmittedCount: 1000 });
    d.update({ jitterBufferDelay: 30, jitterBufferEmittedCount: 1000 });
    expect(d.ms).toBeCloseTo(30);
  });
});

describe("PlayoutStretch", () => {
  it("turns the jitter buffer's squeezed and stretched samples into ms heard sooner or later", () => {
    const p = new PlayoutStretch();
    expect(p.update({ removedSamplesForAcceleration: 4800, insertedSamplesForDeceleration: 0, clockRate: 48_000 })).toBe(0);
    // 960 samples squeezed out since the last sample: what follows is heard 20 ms sooner
    expect(p.update({ removedSamplesForAcceleration: 5760, insertedSamplesForDeceleration: 0, clockRate: 48_000 })).toBeCloseTo(-20);
    // 480 stretched in: 10 ms later
    expect(p.update({ removedSamplesForAcceleration: 5760, insertedSamplesForDeceleration: 480, clockRate: 48_000 })).toBeCloseTo(10);
    expect(p.update({ removedSamplesForAcceleration: 5760, insertedSamplesForDeceleration: 480, clockRate: 48_000 })).toBe(0);
  });

  it("counts audible concealment (late packets filled in) as heard later, silent concealment not", () => {
    const p = new PlayoutStretch();
    const base = { removedSamplesForAcceleration: 0, insertedSamplesForDeceleration: 0, clockRate: 48_000 };
    p.update({ ...base, concealedSamples: 10_000, silentConcealedSamples: 9_000 });
    // 2880 samples made up, 960 of them silence: 40 ms of voice came late
    expect(p.update({ ...base, concealedSamples: 12_880, silentConcealedSamples: 9_960 })).toBeCloseTo(40);
    expect(p.concealedMs).toBeCloseTo(40);
    // a hole that went silent: nothing here (the scheduler's hole rule measures the quiet heard)
    expect(p.update({ ...base, concealedSamples: 22_480, silentConcealedSamples: 19_560 })).toBeCloseTo(0);
    // with a squeeze in the same interval: both count
    expect(p.update({ ...base, removedSamplesForAcceleration: 480, concealedSamples: 23_440, silentConcealedSamples: 19_560 })).toBeCloseTo(10);
    expect(p.concealedMs).toBeCloseTo(20);
  });

  it("is silent where the browser does not report it", () => {
    const p = new PlayoutStretch();
    p.update({ jitterBufferDelay: 1 });
    expect(p.update({ jitterBufferDelay: 2 })).toBe(0);
  });
});
