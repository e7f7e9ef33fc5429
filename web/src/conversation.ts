// One conversation with the bot: the connection to it (a LiveKit room or a direct WebRTC
// connection, link/), the microphone, the bot's voice, and the routing of what arrives to the
// scheduler, the avatar and the page's state. Its parts live beside it: the connection (link/),
// message checking (messages.ts), the latency panel (latency.ts), audio (audio.ts), mouth timing
// (lipsync/). React subscribes to `snapshot()`
// (app/page.tsx); everything here is plain TypeScript so the end-to-end test can read it too
// (window.__avatar).
import type { AvatarDriver, AvatarState } from "./avatar/driver";
import type { SpeechChunkMessage, SpeechStopMessage } from "./gen/protocol";
import { audioContext, Capture, LevelMeter, OnsetDetector, outputLatencyMs } from "./audio";
import { LatencyTracker, type TurnLatency } from "./latency";
import { parseMessage, typedMessage, voiceMessage } from "./messages";
import { type Link, type LinkState, serverTransport } from "./link/link";
import { LiveKitLink } from "./link/livekit";
import { PeerLink } from "./link/peer";
import { audioStats, PlayoutStretch, ReceiveDelay } from "./lipsync/receiveDelay";
import { MOUTH_LEAD_MS, mouthCues, type ScheduledChunk, SpeechScheduler } from "./lipsync/scheduler";

export type Connection = "idle" | "connecting" | "connected" | "reconnecting" | "failed";

export interface ChatLine {
  id: string;
  role: "user" | "bot";
  text: string;
  final: boolean;
  words?: string[]; // bot lines: the words, so the spoken one can be highlighted
}

export type { TurnLatency } from "./latency";

export interface Snapshot {
  connection: Connection;
  error: string | null;
  needsKey: boolean; // the server refused the access key (or got none): ask for it
  warning: string | null;
  notice: string | null; // a problem the bot reported (RTVI error): the conversation goes on
  chatError: string | null; // why the typed message was not sent (it stays in the box)
  voice: string | null; // the voice picked in the page (null: the server's default)
  muted: boolean;
  devices: MediaDeviceInfo[];
  deviceId: string | null;
  lines: ChatLine[];
  speaking: { turnId: string; index: number } | null;
  avatarState: AvatarState;
  latencies: TurnLatency[];
}

const VOICE_LEVEL = 0.02; // RMS above which the microphone or the bot counts as audible

export class Conversation {
  private link: Link | null = null;
  private linkSteps: readonly string[] = [];
  private scheduler: SpeechScheduler;
  private delay = new ReceiveDelay();
  private playout = new PlayoutStretch();
  private mic = new LevelMeter();
  private bot = new OnsetDetector();
  private botTrack: MediaStreamTrack | null = null;
  private statsTimer = 0;
  private raf = 0;
  // the receive delay's correction each chunk placed by it was placed with, until its onset is heard
  private placedWith = new Map<string, number>();
  private closeMouthAt: number | null = null; // after a barge-in, when the voice on its way ends
  private lastUserVoice = 0; // when the person last spoke, or sent a typed message (the end of their turn)
  private latency = new LatencyTracker();
  private listeners = new Set<() => void>();
  private state: Snapshot = {
    connection: "idle", error: null, needsKey: false, warning: null, notice: null, chatError: null, voice: null,
    muted: false, devices: [], deviceId: null, lines: [], speaking: null, avatarState: "idle", latencies: [],
  };
  private typed = 0;
  /** Measurement mode (?measure): every chunk as scheduled, and the bot's audio as heard. */
  readonly log = { chunks: [] as { msg: SpeechChunkMessage; arrival: number; scheduled: ScheduledChunk | null; receiveDelay: number; delayCorrection: number; mouthLeadMs: number }[], capture: null as Capture | null, aligns: [] as { at: number; quietMs: number; turnId: string; seq: number; shift: number; drift: number }[], stretches: [] as { at: number; byMs: number; concealedMs: number; turnId: string }[], stops: [] as { msg: SpeechStopMessage; arrival: number; closeAt: number; movedBy?: number; quietFrom?: number }[] };

  constructor(private readonly avatar: AvatarDriver, private readonly measure = false) {
    this.scheduler = new SpeechScheduler(avatar.textLipSync, (c) => this.onAligned(c));
  }

  subscribe = (fn: () => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  // The microphone level has its own subscription: it moves every frame, and only the meter
  // should re-render for it, not the page with its transcript.
  private level = 0;
  private levelListeners = new Set<() => void>();
  subscribeLevel = (fn: () => void) => {
    this.levelListeners.add(fn);
    return () => this.levelListeners.delete(fn);
  };
  micLevel = () => this.level;
  private setLevel(level: number) {
    // a meter needs no finer steps than 0.01; silence (muted, stopped) always shows at once
    if (level === this.level || (level !== 0 && Math.abs(level - this.level) <= 0.01)) return;
    this.level = level;
    this.levelListeners.forEach((fn) => fn());
  }
  snapshot = () => this.state;
  private set(patch: Partial<Snapshot>) {
    this.state = { ...this.state, ...patch };
    this.listeners.forEach((fn) => fn());
  }

  /** The last connection's steps (Link.progress), for the browser tests' failure reports. */
  linkProgress(): readonly string[] {
    return this.linkSteps;
  }

  async start(accessKey: string, deviceId: string | null): Promise<void> {
    // Web Audio starts here, inside the person's click: browsers' autoplay rules (Safari's
    // strictest) may keep a context started later suspended, and the page would then hear
    // nothing of the bot's voice (no onset corrections of the lip-sync, no level meter).
    audioContext();
    if (this.link) {
      if (this.state.connection !== "failed") return;
      await this.stop(); // the last one was lost: start afresh
    }
    this.set({ connection: "connecting", error: null, needsKey: false, lines: [], latencies: [] });
    // the server says how it is reached: a LiveKit room, or directly (SmallWebRTC)
    const link: Link = (await serverTransport()) === "smallwebrtc" ? new PeerLink() : new LiveKitLink();
    this.link = link;
    this.linkSteps = link.progress ?? []; // kept when a failed link is dropped
    const opened = await link.open(accessKey, { deviceId }, {
      state: (s) => { if (this.link === link) this.onConnection(s); },
      botTrack: (t) => this.onTrack(t),
      data: (payload) => this.onData(payload),
    });
    if (this.link !== link) return void (await link.close()); // stopped while it connected
    if (!opened.ok) {
      this.link = null;
      this.set({ needsKey: opened.needsKey });
      return this.fail(opened.error);
    }
    const mic = link.micTrack();
    if (mic) {
      this.mic.attach(mic);
      if (!mic.getSettings().echoCancellation) {
        this.set({ warning: "This browser has no echo cancellation: use headphones, or the avatar will hear itself." });
      }
    }
    navigator.mediaDevices.addEventListener("devicechange", this.refreshDevices);
    await this.refreshDevices();
    // often: a jitter buffer's squeeze is followed from the next poll on (PlayoutStretch)
    this.statsTimer = window.setInterval(() => this.pollStats(), 200);
    this.raf = requestAnimationFrame(this.frame);
  }

  async stop(): Promise<void> {
    clearInterval(this.statsTimer);
    cancelAnimationFrame(this.raf);
    this.avatar.stopSpeaking();
    this.avatar.setState("idle");
    navigator.mediaDevices?.removeEventListener("devicechange", this.refreshDevices);
    this.mic.detach();
    this.bot.detach();
    this.botTrack = null;
    const link = this.link;
    this.link = null; // first: its closing is not reported as a lost connection
    await link?.close();
    this.set({ connection: "idle", speaking: null, avatarState: "idle" });
    this.setLevel(0);
  }

  async setMuted(muted: boolean): Promise<void> {
    await this.link?.setMuted(muted);
    this.set({ muted });
  }

  /** Sends what the person typed to the bot, which answers aloud (the microphone may be muted).
   * False when it was not sent: `chatError` says why, and the text should stay where it was. */
  async sendText(text: string): Promise<boolean> {
    if (!this.link || this.state.connection !== "connected") {
      this.set({ chatError: "Start the conversation first, then send your message." });
      return false;
    }
    const message = typedMessage(text, `chat-${++this.typed}`);
    if (!message.ok) {
      this.set({ chatError: message.error });
      return false;
    }
    try {
      await this.link.send(message.payload);
    } catch {
      this.set({ chatError: "The message could not be sent: the connection to the voice server is down." });
      return false;
    }
    const lines = [...this.state.lines, { id: `t${this.typed}`, role: "user" as const, text: message.text, final: true }];
    // the reply's response time counts from here, not from when the person last spoke
    this.lastUserVoice = performance.now();
    this.avatar.setState("thinking");
    this.set({ lines, chatError: null, notice: null, avatarState: "thinking" });
    return true;
  }

  /** The bot's voice from its next reply; picked before a conversation, it is sent once
   * connected. */
  async setVoice(voice: string): Promise<void> {
    this.set({ voice });
    await this.sendVoice();
  }

  private async sendVoice(): Promise<void> {
    const voice = this.state.voice;
    if (!voice || !this.link || this.state.connection !== "connected") return;
    await this.link.send(voiceMessage(voice, `voice-${++this.typed}`))
      .catch(() => this.set({ notice: "The voice could not be changed: the connection to the voice server is down." }));
  }

  async useDevice(deviceId: string): Promise<void> {
    await this.link?.useDevice(deviceId);
    const track = this.link?.micTrack();
    if (track) this.mic.attach(track);
    this.set({ deviceId });
  }

  private fail(error: string) {
    this.set({ connection: "failed", error });
  }

  private onConnection(s: LinkState) {
    if (s === "lost") {
      this.fail("The connection to the voice server was lost. Start again to reconnect.");
      return;
    }
    this.set({ connection: s, avatarState: s === "connected" ? "listening" : this.state.avatarState });
    if (s === "connected") {
      this.avatar.setState("listening");
      void this.sendVoice();
    }
  }

  private refreshDevices = async () => {
    const all = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    const devices = all.filter((d) => d.kind === "audioinput");
    this.set({ devices, deviceId: this.link?.micTrack()?.getSettings().deviceId ?? null });
  };

  private onTrack(track: MediaStreamTrack) {
    // without it the mouth keeps to the predicted schedule: say why in the console
    this.bot.attach(track, (t, quietMs) => this.onOnset(t, quietMs), (from, quietMs) => this.onQuiet(from, quietMs))
      .catch((e) => console.error("lip-sync: cannot listen to the bot's voice", e));
    this.delay = new ReceiveDelay(outputLatencyMs());
    this.placedWith.clear();
    this.playout = new PlayoutStretch();
    if (this.measure) {
      this.log.capture = new Capture(track);
      this.log.capture.start().catch((e) => console.error("measure: cannot record the bot's voice", e));
    }
    this.botTrack = track;
  }

  private async pollStats() {
    if (!this.botTrack) return;
    const report = await this.link?.botStats();
    if (!report) return;
    const stats = audioStats(report);
    this.delay.update(stats);
    const now = performance.now();
    const byMs = this.playout.update(stats);
    const moved = Math.abs(byMs) >= 1 ? this.scheduler.stretch(now, byMs) : null;
    if (moved) {
      this.requeueMouth(now);
      if (this.measure) this.log.stretches.push({ at: now, byMs, concealedMs: this.playout.concealedMs, turnId: moved.turnId });
    }
  }

  private onData(payload: Uint8Array) {
    const now = performance.now();
    const incoming = parseMessage(payload);
    if (!incoming) return;
    if (incoming.kind === "rtvi") return this.onRtvi(incoming.type, incoming.data);
    const { msg } = incoming;
    if (msg.type === "speech.chunk") this.onChunk(msg, now);
    else this.onStop(msg, now);
  }

  private onRtvi(type: string, data: Record<string, unknown>) {
    if (type === "error" && typeof data.error === "string") {
      this.set({ notice: `The assistant had a problem with that turn (${data.error}). Please say it again.` });
    } else if (type === "user-started-speaking") {
      this.avatar.setState("listening");
      this.set({ avatarState: "listening", notice: null });
    } else if (type === "user-stopped-speaking") {
      this.avatar.setState("thinking");
      this.set({ avatarState: "thinking" });
    } else if (type === "user-transcription" && typeof data.text === "string") {
      const lines = this.state.lines.slice();
      const last = lines[lines.length - 1];
      const line: ChatLine = { id: `u${lines.length}`, role: "user", text: data.text, final: !!data.final };
      if (last && last.role === "user" && !last.final) lines[lines.length - 1] = { ...line, id: last.id };
      else lines.push(line);
      this.set({ lines });
    }
  }

  private onChunk(msg: SpeechChunkMessage, arrival: number) {
    const receiveDelay = this.delay.ms;
    const delayCorrection = this.delay.correction;
    const chunk = this.scheduler.add(msg, arrival, receiveDelay);
    if (chunk?.anchored && !chunk.aligned) {  // its onset will say how wrong the delay was
      this.placedWith.set(`${msg.turn_id}/${msg.seq}`, delayCorrection);
      // chunks never heard (a turn cut short) are not waited for forever
      if (this.placedWith.size > 64) this.placedWith.delete(this.placedWith.keys().next().value!);
    }
    if (this.measure) this.log.chunks.push({ msg, arrival, scheduled: chunk, receiveDelay, delayCorrection, mouthLeadMs: MOUTH_LEAD_MS });
    if (!chunk) return;
    this.avatar.speak(mouthCues(chunk.visemes));
    const lines = this.state.lines.slice();
    const id = `b-${msg.turn_id}`;
    const at = lines.findIndex((l) => l.id === id);
    const words = chunk.words.map((w) => w.word);
    if (at < 0) {
      lines.push({ id, role: "bot", text: msg.text, final: false, words });
      this.latency.replyStarts(msg.turn_id, this.lastUserVoice, chunk);
    } else {
      const prev = lines[at];
      lines[at] = { ...prev, text: `${prev.text} ${msg.text}`, words: [...(prev.words ?? []), ...words] };
    }
    this.set({ lines });
  }

  /** Barge-in: the mouth goes on with the voice still on its way, then closes (`frame`). */
  private onStop(msg: SpeechStopMessage, now: number) {
    const closeAt = this.scheduler.stop(msg, now);
    if (this.measure) this.log.stops.push({ msg, arrival: now, closeAt });
    this.closeMouthAt = closeAt;
    if (closeAt > now) this.requeueMouth(now);
    else this.closeMouth(now);
  }

  /** The mouth to rest at once (TalkingHead would ease it there over a second or two); shapes
   * of a reply that started since stay queued. */
  private closeMouth(now: number) {
    this.closeMouthAt = null;
    this.avatar.stopSpeaking();
    this.requeueMouth(now);
  }

  /** Every animation frame: levels, the spoken word, the avatar's state, the latency panel. */
  private frame = () => {
    const now = performance.now();
    const micLevel = this.state.muted ? 0 : this.mic.level();
    if (micLevel > VOICE_LEVEL) this.lastUserVoice = now;
    const measured = this.latency.frame(now);
    if (measured) this.set({ latencies: [...this.state.latencies.slice(-9), measured] });
    if (this.closeMouthAt !== null && now >= this.closeMouthAt) this.closeMouth(now);
    const heard = this.scheduler.wordAt(now);
    const speaking = heard ? { turnId: heard.turnId, index: heard.word.index } : null;
    let avatarState = this.state.avatarState;
    if (this.scheduler.speakingAfter(now)) avatarState = "speaking";
    else if (avatarState === "speaking") avatarState = "listening";
    if (avatarState !== this.state.avatarState) this.avatar.setState(avatarState);
    this.setLevel(micLevel);
    if (speaking?.index !== this.state.speaking?.index || speaking?.turnId !== this.state.speaking?.turnId
      || avatarState !== this.state.avatarState) {
      this.set({ speaking, avatarState });
    }
    this.scheduler.prune(now - 60_000);
    if (this.link) this.raf = requestAnimationFrame(this.frame);
  };

  /** After the schedule moved (an onset, the jitter buffer): the mouth shapes queued in the
   * avatar are replaced by the ones still to come. */
  private requeueMouth(now: number) {
    this.avatar.replaceShapes(mouthCues(this.scheduler.visemesAfter(now)));
  }

  /** A chunk placed by the receive delay was heard `chunk.shift` ms later: the next one placed
   * that way comes with that error learned. */
  private onAligned(chunk: ScheduledChunk) {
    const key = `${chunk.turnId}/${chunk.seq}`;
    const placedWith = this.placedWith.get(key);
    if (placedWith === undefined) return;
    this.placedWith.delete(key);
    this.delay.learn(placedWith, chunk.shift);
  }

  /** The bot's voice has been quiet since `from`: after an interruption, where the mouth still
   * had words to say, the voice on its way has ended sooner than its stop said, and the mouth
   * closes now. */
  private onQuiet(from: number, quietMs: number) {
    if (this.closeMouthAt === null || this.scheduler.voiceEnded(from, quietMs) === null) return;
    const now = performance.now();
    this.closeMouthAt = now;
    this.requeueMouth(now);
    const stop = this.log.stops.at(-1);
    if (this.measure && stop && stop.closeAt > now) Object.assign(stop, { closeAt: now, quietFrom: from });
  }

  /** The bot's voice starts being heard: correct the predicted place of its chunk. */
  private onOnset(t: number, quietMs: number) {
    const aligned = this.scheduler.align(t, quietMs);
    if (aligned) {
      // a turn stopped before this voice of it was heard: the mouth closes that much later too
      const closeAt = this.scheduler.stopsAt(aligned.turnId);
      if (closeAt !== null) this.closeMouthAt = closeAt;
      this.requeueMouth(performance.now());
      if (this.measure) {
        this.log.aligns.push({ at: t, quietMs, turnId: aligned.turnId, seq: aligned.seq, shift: aligned.shift, drift: aligned.drift });
        const stop = this.log.stops.at(-1);
        if (closeAt !== null && stop?.msg.turn_id === aligned.turnId) {
          Object.assign(stop, { movedBy: closeAt - stop.closeAt + (stop.movedBy ?? 0), closeAt });
        }
      }
    }
    this.latency.onsetHeard(t, aligned?.turnId ?? null, this.lastUserVoice);
  }
}
