// A direct WebRTC connection with the bot (TRANSPORT=smallwebrtc: Pipecat's SmallWebRTC on the
// server), made with this browser's own RTCPeerConnection: nothing is loaded for it. The offer
// goes to POST /webrtc/offer once ICE gathering is done (no trickle), with the relayed candidates
// of the stack's TURN server when it has one (GET /webrtc/ice-servers); its first audio section is
// the microphone, and the bot's voice comes back on the same one; a data channel carries the
// messages both ways as text (JSON), the same messages as LiveKit's data packets. (Gathered
// before the microphone is open, this browser's own addresses may be hidden behind mDNS names;
// the bot's answer carries its real ones, and ICE learns the browser's from its checks.)
import { fetchClient } from "../api";
import { conversationRequest } from "../token";
import { type Link, type LinkEvents, MIC_CONSTRAINTS, type MicOptions, micError, type Opened, stepRecorder } from "./link";

const GATHER_MS = 3000; // host candidates come at once, a TURN relay's in a round trip; whatever came by then is offered
const CONNECT_MS = 20_000;
const CLOSE_WAIT_MS = 5000;

const UNCONNECTED = "Cannot open a direct connection to the avatar's server (WebRTC, peer to peer). "
  + "A firewall between this browser and the server may block it: the administrator can set up the TURN relay (TURN_HOST) or use TRANSPORT=livekit.";

/** The bot's own signalling on the data channel (Pipecat's SmallWebRTC), not for the page. */
function signalling(text: string): { type?: string } | null {
  if (!text.includes("\"signalling\"")) return null;
  try {
    const m = JSON.parse(text) as { type?: string; message?: { type?: string } };
    return m.type === "signalling" ? (m.message ?? {}) : null;
  } catch {
    return null;
  }
}

export class PeerLink implements Link {
  private pc: RTCPeerConnection | null = null;
  private channel: RTCDataChannel | null = null;
  private sender: RTCRtpSender | null = null;
  private mic: MediaStreamTrack | null = null;
  private audio: HTMLAudioElement | null = null;
  private muted = false;
  readonly progress: string[] = [];

  async open(accessKey: string, options: MicOptions, events: LinkEvents): Promise<Opened> {
    const step = stepRecorder(this.progress);
    const ice = await requestIceServers(accessKey);
    step(`ice servers: ${ice.ok ? ice.iceServers.length : "refused"}`);
    if (!ice.ok) return ice;
    // the stack's TURN relay when it has one (a browser behind NAT reaches the bot through it)
    const pc = new RTCPeerConnection({ iceServers: ice.iceServers });
    this.pc = pc;
    // the microphone's section, its track added once the server has said yes (as with LiveKit:
    // a wrong key or a full server is said before the microphone is asked for)
    this.sender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
    const channel = pc.createDataChannel("chat", { ordered: true });
    channel.binaryType = "arraybuffer";
    this.channel = channel;
    const encoder = new TextEncoder();
    let connected = false;
    const opened = new Promise<boolean>((resolve) => {
      const timer = window.setTimeout(() => resolve(false), CONNECT_MS);
      channel.onopen = () => {
        step("channel open");
        window.clearTimeout(timer);
        connected = true;
        resolve(true);
      };
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        step(`connection ${s}`);
        if (this.pc !== pc) return;
        if (s === "failed" || s === "closed") {
          window.clearTimeout(timer);
          resolve(false);
          if (connected) events.state("lost");
        } else if (s === "disconnected") events.state("reconnecting");
        else if (s === "connected" && connected) events.state("connected");
      };
    });
    channel.onmessage = (e: MessageEvent<string | ArrayBuffer>) => {
      if (typeof e.data === "string") {
        if (signalling(e.data)?.type === "peerLeft" && this.pc === pc) events.state("lost");
        else events.data(encoder.encode(e.data));
      } else events.data(new Uint8Array(e.data));
    };
    pc.ontrack = (e) => {
      step(`track ${e.track.kind}`);
      if (e.track.kind !== "audio") return;
      const el = document.createElement("audio"); // the bot's voice plays from the track itself
      el.id = "bot-audio";
      el.autoplay = true;
      el.srcObject = new MediaStream([e.track]);
      document.body.appendChild(el);
      void el.play().catch(() => undefined); // autoplay: the person's click started this
      this.audio = el;
      events.botTrack(e.track);
    };
    events.state("connecting");

    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    step(`offer gathered (${pc.iceGatheringState})`);
    const answer = await requestAnswer(accessKey, pc.localDescription!.sdp);
    step(`answer: ${answer.ok ? "received" : "refused"}`);
    if (!answer.ok) {
      await this.close();
      return answer;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    step("answer applied");
    try {
      this.mic = await openMic(options.deviceId);
      step("microphone open");
      await this.sender.replaceTrack(this.mic);
      step("microphone sending");
    } catch (e) {
      // Closed once connected, the bot hears it and frees its place at once; closed before,
      // the bot would wait for a browser that never comes.
      await Promise.race([opened, new Promise((resolve) => window.setTimeout(resolve, CLOSE_WAIT_MS))]);
      await this.close();
      return { ok: false, needsKey: false, error: micError(e) };
    }
    if (!(await opened)) {
      await this.close();
      return { ok: false, needsKey: false, error: UNCONNECTED };
    }
    events.state("connected");
    return { ok: true };
  }

  micTrack(): MediaStreamTrack | null {
    return this.mic;
  }

  async send(payload: Uint8Array<ArrayBuffer>): Promise<void> {
    if (this.channel?.readyState !== "open") throw new Error("not connected");
    this.channel.send(new TextDecoder().decode(payload));
  }

  async setMuted(muted: boolean): Promise<void> {
    this.muted = muted;
    if (this.mic) this.mic.enabled = !muted; // the bot receives silence
  }

  async useDevice(deviceId: string): Promise<void> {
    if (!this.sender) return;
    const track = await openMic(deviceId);
    track.enabled = !this.muted;
    await this.sender.replaceTrack(track);
    this.mic?.stop();
    this.mic = track;
  }

  botStats(): Promise<RTCStatsReport | undefined> {
    const receiver = this.pc?.getReceivers().find((r) => r.track.kind === "audio");
    return receiver?.getStats() ?? Promise.resolve(undefined);
  }

  async close(): Promise<void> {
    const pc = this.pc;
    this.pc = null; // first: its closing is not reported as a lost connection
    this.channel = null;
    this.sender = null;
    pc?.close();
    this.mic?.stop();
    this.mic = null;
    this.audio?.remove();
    this.audio = null;
  }
}

async function openMic(deviceId: string | null): Promise<MediaStreamTrack> {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { ...MIC_CONSTRAINTS, ...(deviceId ? { deviceId: { exact: deviceId } } : {}) },
  });
  return stream.getAudioTracks()[0];
}

function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = window.setTimeout(resolve, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        window.clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** The TURN relay and its credentials (none without TURN_HOST); a wrong key is said here. */
function requestIceServers(accessKey: string) {
  return conversationRequest((headers) => fetchClient.GET("/webrtc/ice-servers", { headers }),
    accessKey, (data) => ({ ok: true as const, iceServers: data.ice_servers }));
}

function requestAnswer(accessKey: string, sdp: string) {
  return conversationRequest(
    (headers) => fetchClient.POST("/webrtc/offer", { body: { sdp, type: "offer" }, headers }),
    accessKey, (data) => ({ ok: true as const, sdp: data.sdp }));
}
