// What arrives on the data channel: Pipecat's RTVI events, or our lip-sync messages checked
// against docs/protocol.schema.json (anything else, another version, a malformed packet: null).
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
