import { describe, expect, it } from "vitest";
import { CLIENT } from "./gen/client";
import { parseMessage, typedMessage, voiceMessage } from "./messages";

const bytes = (v: unknown) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));

describe("data channel messages", () => {
  it("routes RTVI events and checked speech messages", () => {
    expect(parseMessage(bytes({ label: "rtvi-ai", type: "user-transcription", data: { text: "hi" } })))
      .toEqual({ kind: "rtvi", type: "user-transcription", data: { text: "hi" } });
    const stop = { v: 1, type: "speech.stop", turn_id: "t1", reason: "interrupted", sent_ms: null };
    expect(parseMessage(bytes(stop))).toEqual({ kind: "speech", msg: stop });
  });
  it("drops what is not JSON, not an object, or not a valid message", () => {
    expect(parseMessage(bytes("{not json"))).toBeNull();
    expect(parseMessage(bytes("42"))).toBeNull();
    expect(parseMessage(bytes({ v: 1, type: "speech.stop" }))).toBeNull();
    expect(parseMessage(bytes({ v: 9, type: "speech.stop", turn_id: "t1", reason: "interrupted", sent_ms: null }))).toBeNull();
  });
});

describe("typed chat", () => {
  it("is sent as RTVI send-text that the bot answers aloud, trimmed", () => {
    const sent = typedMessage("  What is the capital of France? ", "c1");
    expect(sent.ok).toBe(true);
    if (!sent.ok) return;
    expect(sent.text).toBe("What is the capital of France?");
    expect(JSON.parse(new TextDecoder().decode(sent.payload))).toEqual({
      id: "c1", label: "rtvi-ai", type: "send-text",
      data: { content: "What is the capital of France?", options: { run_immediately: true, audio_response: true } },
    });
  });
  it("picks a voice with the client message the bot listens for", () => {
    expect(JSON.parse(new TextDecoder().decode(voiceMessage("bf_emma", "v1")))).toEqual({
      id: "v1", label: "rtvi-ai", type: "client-message", data: { t: "set-voice", d: { voice: "bf_emma" } },
    });
  });
  it("refuses a message over the limit with the reason and the numbers, and sends nothing blank", () => {
    expect(typedMessage("x".repeat(CLIENT.chatMaxChars), "c2").ok).toBe(true);
    const long = typedMessage("x".repeat(CLIENT.chatMaxChars + 1), "c3");
    expect(long).toEqual({ ok: false, error: expect.stringContaining(`${CLIENT.chatMaxChars + 1} characters`) });
    expect(!long.ok && long.error).toContain(`at most ${CLIENT.chatMaxChars}`);
    expect(typedMessage("   ", "c4")).toEqual({ ok: false, error: null });
  });
});
