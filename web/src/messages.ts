// What arrives on the data channel: Pipecat's RTVI events, or our lip-sync messages checked
// against docs/protocol.schema.json (anything else, another version, a malformed packet: null);
// and what the page sends on it: typed chat.
import { CLIENT } from "./gen/client";
import type { SpeechChunkMessage, SpeechStopMessage } from "./gen/protocol";
import validateMessage from "./gen/validate-message";

export type Incoming =
  | { kind: "rtvi"; type: string; data: Record<string, unknown> }
  | { kind: "speech"; msg: SpeechChunkMessage | SpeechStopMessage };

export function parseMessage(payload: Uint8Array): Incoming | null {
  let msg: unknown;
  try {
    msg = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return null;
  }
  if (typeof msg !== "object" || msg === null) return null;
  const m = msg as Record<string, unknown>;
  if (m.label === "rtvi-ai" && typeof m.type === "string") {
    const data = typeof m.data === "object" && m.data !== null ? (m.data as Record<string, unknown>) : {};
    return { kind: "rtvi", type: m.type, data };
  }
  return validateMessage(msg) ? { kind: "speech", msg } : null;
}

/** What a person typed, as Pipecat's RTVI send-text message (the bot answers it aloud), or why
 * it cannot be sent: nothing but spaces, or longer than the limit the bot enforces too. */
export function typedMessage(text: string, id: string):
  { ok: true; text: string; payload: Uint8Array<ArrayBuffer> } | { ok: false; error: string | null } {
  const content = text.trim();
  if (!content) return { ok: false, error: null };
  if (content.length > CLIENT.chatMaxChars) {
    return {
      ok: false,
      error: `Your message is ${content.length} characters long; the assistant takes at most ${CLIENT.chatMaxChars}. Shorten it and send it again.`,
    };
  }
  const message = {
    id, label: "rtvi-ai", type: "send-text",
    data: { content, options: { run_immediately: true, audio_response: true } },
  };
  return { ok: true, text: content, payload: new TextEncoder().encode(JSON.stringify(message)) };
}

/** The RTVI client message that picks the bot's voice (one of GET /voices) from its next reply. */
export function voiceMessage(voice: string, id: string): Uint8Array<ArrayBuffer> {
  const message = { id, label: "rtvi-ai", type: "client-message", data: { t: CLIENT.setVoice, d: { voice } } };
  return new TextEncoder().encode(JSON.stringify(message));
}
