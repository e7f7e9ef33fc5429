// How the page reaches the bot: the server says which transport it takes (GET /config) and the
// conversation talks to it through a Link, whatever carries it. Two kinds:
// - LiveKitLink (livekit.ts): a room on the LiveKit server, joined with a token (POST /token);
// - PeerLink (peer.ts): a direct WebRTC connection with the bot, this browser's own
//   RTCPeerConnection, offer/answer over POST /webrtc/offer (no LiveKit, nothing loaded).
// Both carry the same things: the microphone up, the bot's voice down, and the same messages
// (RTVI and lip-sync timings, docs/protocol.md) both ways.

import { fetchClient } from "../api";

export type LinkState = "connecting" | "connected" | "reconnecting" | "lost";

export interface LinkEvents {
  state(state: LinkState): void;
  /** The bot's voice: already playing in the page when this is called. */
  botTrack(track: MediaStreamTrack): void;
  data(payload: Uint8Array): void;
}

/** Why a conversation could not start, in words for the person. */
export type Opened = { ok: true } | { ok: false; error: string; needsKey: boolean };

export interface MicOptions {
  deviceId: string | null;
}

export interface Link {
  /** Connects and opens the microphone; on failure, everything opened is closed again. */
  open(accessKey: string, mic: MicOptions, events: LinkEvents): Promise<Opened>;
  micTrack(): MediaStreamTrack | null;
  send(payload: Uint8Array<ArrayBuffer>): Promise<void>;
  setMuted(muted: boolean): Promise<void>;
  useDevice(deviceId: string): Promise<void>;
  /** The receiver's statistics of the bot's voice (inbound-rtp: jitter buffer, concealment). */
  botStats(): Promise<RTCStatsReport | undefined>;
  close(): Promise<void>;
  /** How far open() got, step by step, with ms since it began: where a connection that never
   *  came stopped (read by the browser tests; shown nowhere). */
  readonly progress?: readonly string[];
}

/** Records Link.progress: each step as "<ms since now> <what>". */
export function stepRecorder(progress: string[]): (what: string) => void {
  const began = performance.now();
  return (what) => progress.push(`${Math.round(performance.now() - began)} ${what}`);
}

export const MIC_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** What to tell the person when the microphone cannot be opened. */
export function micError(e: unknown): string {
  const denied = e instanceof DOMException && (e.name === "NotAllowedError" || e.name === "SecurityError");
  return denied
    ? "Microphone access was denied. Allow the microphone for this page in the browser's site settings, then start again."
    : "No microphone could be opened. Check that one is connected and not used by another program.";
}

export const UNREACHABLE = "The server cannot be reached. Check the address and that the service is running.";

/** The transport the server takes conversations over (GET /config). */
export async function serverTransport(): Promise<"livekit" | "smallwebrtc" | null> {
  try {
    const { data } = await fetchClient.GET("/config");
    return data?.transport ?? null;
  } catch {
    return null; // unreachable: the conversation request that follows says so
  }
}
