// Listening to audio tracks in the page: level meters (the microphone meter, when the bot's voice
// starts) and, in measurement mode, a sample-exact recording of the bot's voice as heard.
let shared: AudioContext | null = null;
export function audioContext(): AudioContext {
  shared ??= new AudioContext({ latencyHint: "interactive" });
  if (shared.state === "suspended") void shared.resume();
  return shared;
}

/** AudioContext time (s) → page time (performance.now() ms) at which that sample is heard. */
export function contextToPage(ctx: AudioContext, contextTime: number): number {
  const ts = ctx.getOutputTimestamp();
  if (!ts.performanceTime || ts.contextTime === undefined) return performance.now();
  return ts.performanceTime + (contextTime - ts.contextTime) * 1000;
}

const SILENCE_BEFORE_ONSET_MS = 300;

export class LevelMeter {
  private source: MediaStreamAudioSourceNode | null = null;
  private analyser: AnalyserNode | null = null;
  private buf = new Float32Array(2048);
  private quietSince: number | null = null;

  attach(track: MediaStreamTrack): void {
    this.detach();
    const ctx = audioContext();
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = this.buf.length;
    this.source.connect(this.analyser);
  }

  detach(): void {
    this.source?.disconnect();
    this.source = this.analyser = null;
  }

  outputLatencyMs(): number {
    const ctx = audioContext();
    return ((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 1000;
  }

  /** RMS of the last ~43 ms, 0..1. */
  level(): number {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const x of this.buf) sum += x * x;
    return Math.sqrt(sum / this.buf.length);
  }

  /** When audio starts after at least 300 ms of quiet: the page time of its first loud sample,
   * found inside the analyser's window (not just the frame it was noticed in). */
  onset(threshold: number): number | null {
    if (!this.analyser) return null;
    const now = performance.now();
    const rms = this.level();
    if (rms < threshold) {
      this.quietSince ??= now;
      return null;
    }
    const wasQuiet = this.quietSince !== null && now - this.quietSince >= SILENCE_BEFORE_ONSET_MS;
    this.quietSince = null;
    if (!wasQuiet) return null;
    const ctx = audioContext();
    const first = this.buf.findIndex((x) => Math.abs(x) > threshold * 2);
    const back = (this.buf.length - Math.max(0, first)) / ctx.sampleRate;
    return contextToPage(ctx, ctx.currentTime - back);
  }
}

/** Records a track sample by sample with the page time each block is heard (measurement mode;
 * the worklet is web/public/capture-worklet.js). */
export class Capture {
  readonly blocks: { t: number; samples: Float32Array }[] = [];
  sampleRate = 0;
  private node: AudioWorkletNode | null = null;

  constructor(private readonly track: MediaStreamTrack) {}

  async start(): Promise<void> {
    const ctx = audioContext();
    this.sampleRate = ctx.sampleRate;
    await ctx.audioWorklet.addModule(new URL("capture-worklet.js", document.baseURI).href);
    const source = ctx.createMediaStreamSource(new MediaStream([this.track]));
    this.node = new AudioWorkletNode(ctx, "capture");
    this.node.port.onmessage = (e: MessageEvent<{ time: number; samples: Float32Array }>) => {
      this.blocks.push({ t: contextToPage(ctx, e.data.time), samples: e.data.samples });
    };
    source.connect(this.node);
  }
}
