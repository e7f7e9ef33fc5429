// A conversation in a LiveKit room (TRANSPORT=livekit): a token from POST /token, then
// livekit-client (bundled) does the rest.
import {
  ConnectionState, LocalAudioTrack, type RemoteAudioTrack, type RemoteTrack, Room, RoomEvent, Track,
} from "livekit-client";
import { requestToken } from "../token";
import { type Link, type LinkEvents, type LinkState, MIC_CONSTRAINTS, type MicOptions, micError, type Opened, stepRecorder } from "./link";

const STATES: Partial<Record<ConnectionState, LinkState>> = {
  [ConnectionState.Connecting]: "connecting", [ConnectionState.Connected]: "connected",
  [ConnectionState.Reconnecting]: "reconnecting", [ConnectionState.SignalReconnecting]: "reconnecting",
  [ConnectionState.Disconnected]: "lost",
};

export class LiveKitLink implements Link {
  private room: Room | null = null;
  private bot: RemoteAudioTrack | null = null;
  readonly progress: string[] = [];
  private step = stepRecorder(this.progress);

  async open(accessKey: string, mic: MicOptions, events: LinkEvents): Promise<Opened> {
    this.step = stepRecorder(this.progress); // ms from here, as PeerLink's
    const token = await requestToken(accessKey);
    this.step(`token: ${token.ok ? "granted" : "refused"}`);
    if (!token.ok) return token;
    const room = new Room({ adaptiveStream: false, dynacast: false });
    this.room = room;
    room.on(RoomEvent.ConnectionStateChanged, (s) => {
      this.step(`room ${s}`);
      const state = STATES[s];
      if (state && this.room) events.state(state);
    })
      .on(RoomEvent.SignalConnected, () => this.step("signal connected"))
      .on(RoomEvent.ParticipantConnected, (p) => this.step(`participant ${p.identity}`))
      .on(RoomEvent.TrackSubscribed, (t) => { this.step("bot track"); this.onTrack(t, events); })
      .on(RoomEvent.DataReceived, (payload) => events.data(payload));
    try {
      await room.connect(token.url, token.token);
    } catch (e) {
      this.step(`connect failed: ${String(e)}`);
      this.room = null;
      return { ok: false, needsKey: false, error: "Cannot connect to the voice server (LiveKit). If you are outside the office network, a TURN relay must be configured." };
    }
    try {
      await room.localParticipant.setMicrophoneEnabled(true, { deviceId: mic.deviceId ?? undefined, ...MIC_CONSTRAINTS });
      this.step("microphone published");
    } catch (e) {
      this.step(`microphone failed: ${String(e)}`);
      await this.close();
      return { ok: false, needsKey: false, error: micError(e) };
    }
    return { ok: true };
  }

  private onTrack(track: RemoteTrack, events: LinkEvents) {
    if (track.kind !== Track.Kind.Audio) return;
    const el = track.attach(); // the bot's voice plays from the WebRTC track itself
    el.id = "bot-audio";
    document.body.appendChild(el);
    this.bot = track as RemoteAudioTrack;
    events.botTrack(track.mediaStreamTrack);
  }

  micTrack(): MediaStreamTrack | null {
    const track = this.room?.localParticipant.getTrackPublication(Track.Source.Microphone)?.track;
    return track instanceof LocalAudioTrack ? track.mediaStreamTrack : null;
  }

  async send(payload: Uint8Array<ArrayBuffer>): Promise<void> {
    if (!this.room) throw new Error("not connected");
    await this.room.localParticipant.publishData(payload, { reliable: true });
  }

  async setMuted(muted: boolean): Promise<void> {
    await this.room?.localParticipant.setMicrophoneEnabled(!muted);
  }

  async useDevice(deviceId: string): Promise<void> {
    await this.room?.switchActiveDevice("audioinput", deviceId);
  }

  botStats(): Promise<RTCStatsReport | undefined> {
    return this.bot?.getRTCStatsReport() ?? Promise.resolve(undefined);
  }

  async close(): Promise<void> {
    this.bot?.detach().forEach((el) => el.remove()); // the bot's <audio> goes with it
    this.bot = null;
    const room = this.room;
    this.room = null;
    this.step("closing");
    await room?.disconnect();
    this.step("closed");
  }
}
