import { describe, expect, it } from "vitest";
import { parseMessage } from "./messages";

const bytes = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));

describe("data channel messages", () => {
  it("routes RTVI events and checked speech messages", () => {
    expect(parseMessage(bytes({ label: "rtvi-ai", type: "user-transcription", data: { text: "hi" } })))
      .toEqual({ kind: "rtvi", type: "user-transcription", data: { text: "hi" } });
    const stop = { v: 1, type: "speech.stop", turn_id: "t1", reason: "interrupted" };
    expect(parseMessage(bytes(stop))).toEqual({ kind: "speech", msg: stop });
  });
  it("drops what is not JSON, not an object, or not a valid message", () => {
    expect(parseMessage(bytes("{not json"))).toBeNull();
    expect(parseMessage(bytes("42"))).toBeNull();
    expect(parseMessage(bytes({ v: 1, type: "speech.stop" }))).toBeNull();
    expect(parseMessage(bytes({ v: 9, type: "speech.stop", turn_id: "t1", reason: "interrupted" }))).toBeNull();
  });
});
