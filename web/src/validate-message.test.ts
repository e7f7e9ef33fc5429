import { describe, expect, it } from "vitest";
import validateMessage from "./gen/validate-message";

// A chunk as the bot sends it (docs/protocol.md).
const chunk = {
  v: 1, type: "speech.chunk", turn_id: "t1", seq: 0, text: "Hi", offset_ms: 0,
  duration_ms: 300, samples: 7200, sample_rate: 24000, source: "model", lead_ms: 100, onset_ms: 40,
  words: ["Hi"], wtimes: [50], wdurations: [200],
  visemes: ["sil", "I", "sil"], vtimes: [0, 50, 250], vdurations: [50, 200, 50],
  ptimes: [0], pdurations: [40], voice: "af_heart",
};

describe("incoming messages are checked against the protocol schema", () => {
  it("accepts the bot's messages", () => {
    expect(validateMessage(chunk)).toBe(true);
    expect(validateMessage({ v: 1, type: "speech.stop", turn_id: "t1", reason: "interrupted", sent_ms: null })).toBe(true);
  });
  it("refuses another version, a missing field, a wrong type, an unknown viseme", () => {
    expect(validateMessage({ ...chunk, v: 2 })).toBe(false);
    const missing: Record<string, unknown> = { ...chunk };
    delete missing.wtimes;
    expect(validateMessage(missing)).toBe(false);
    expect(validateMessage({ ...chunk, seq: "0" })).toBe(false);
    expect(validateMessage({ ...chunk, visemes: ["sil", "XX", "sil"] })).toBe(false);
    expect(validateMessage({ ...chunk, type: "speech.start" })).toBe(false);
  });
});
