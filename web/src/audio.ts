// Listening to audio tracks in the page: the microphone's level meter, when the bot's voice
// starts (onsets, on the audio thread) and, in measurement mode, a sample-exact recording of the
// bot's voice as heard.
import { ONSET_RULE } from "./gen/onset";

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

/** Output latency of the page's audio (ms): the fallback for the playout part of the delay. */
export function outputLatencyMs(): number {
  const ctx = audioContext();
  return ((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 1000;
}

export class LevelMeter {
  private source: MediaStreamAudioSourceNode | null = null;
  private analyser: AnalyserNode | null = null;
  private buf = new Float32Array(2048);

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

  /** RMS of the last ~43 ms, 0..1. */
  level(): number {
    if (!this.analyser) return 0;
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const x of this.buf) sum += x * x;
    return Math.sqrt(sum / this.buf.length);
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

/** How often a quiet stretch in the bot's voice is told to the page while it lasts, and for how
 * long (the voice still on its way after an interruption is heard within 2 s). */
const QUIET_REPORT_MS = 100;
const QUIET_REPORT_MAX_MS = 3000;

/** Voice onsets in a track, found sample-exactly on the audio thread (public/onset-worklet.js),
 * reported as the page time they are heard. */
export class OnsetDetector {
  private source: MediaStreamAudioSourceNode | null = null;
  private node: AudioWorkletNode | null = null;

  /** `onOnset(t, quietMs)`: the voice starts at `t` after `quietMs` of quiet. `onQuiet(from,
   * quietMs)`: it has been quiet since `from` for `quietMs` (past the onset rule's pause; told
   * again every QUIET_REPORT_MS while it lasts, up to QUIET_REPORT_MAX_MS). */
  async attach(track: MediaStreamTrack, onOnset: (pageTime: number, quietMs: number) => void,
    onQuiet: (from: number, quietMs: number) => void = () => {}): Promise<void> {
    this.detach();
    const ctx = audioContext();
    await ctx.audioWorklet.addModule(new URL("onset-worklet.js", document.baseURI).href);
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.node = new AudioWorkletNode(ctx, "onset", {
      processorOptions: { ...ONSET_RULE, quietReportMs: QUIET_REPORT_MS, quietReportMaxMs: QUIET_REPORT_MAX_MS },
    });
    this.node.port.onmessage = (e: MessageEvent<{ kind: "onset" | "quiet"; time: number; quiet: number }>) =>
      (e.data.kind === "onset" ? onOnset : onQuiet)(contextToPage(ctx, e.data.time), e.data.quiet * 1000);
    this.source.connect(this.node);
  }

  detach(): void {
    this.source?.disconnect();
    this.node?.disconnect();
    this.source = this.node = null;
  }
}
