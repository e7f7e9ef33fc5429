// The avatar: TalkingHead renders it and animates its face and body; we drive its mouth from the
// scheduled viseme cues (lipsync/scheduler.ts) and show the conversation state through mood,
// gaze and gestures. TalkingHead plays no audio here: the bot's voice comes from the WebRTC
// track, so the browser's echo cancellation keeps working.
import type { TalkingHead as TalkingHeadClass } from "@met4citizen/talkinghead";
import type { TextLipSync, VisemeCue } from "../lipsync/scheduler";
import { type Point, upperViewOptions, videoCallFraming } from "./framing";

/** TalkingHead's state of one morph target (the fields this driver sets). */
interface MorphState {
  value: number;
  applied: number;
  newvalue: number | null;
  base: number | null;
  v: number;
  needsUpdate: boolean;
}

export type AvatarState = "idle" | "listening" | "thinking" | "speaking";

/** One rendered frame: page time and TalkingHead's animation clock (for the lip-sync measure). */
export type Frame = [page: number, animClock: number];

/** Below this frame rate the mouth visibly lags (a shape waits for the next frame): render
 * fewer pixels rather than fewer frames. */
const MIN_FPS = 40;
const MIN_PIXEL_RATIO = 0.25;
type Bone = "objectLeftEye" | "objectRightEye" | "objectLeftArm" | "objectRightArm";
/** How long TalkingHead takes to blend a new model into its first pose. */
const POSE_SETTLE_MS = 1500;

export class AvatarDriver {
  private state: AvatarState = "idle";
  readonly frames: Frame[] = [];
  recordFrames = false;
  /** Framed on the standing pose (the second framing; the camera then eases there). */
  framedStanding = false;
  private fpsWindow: number[] = [];

  private constructor(
    private readonly head: TalkingHeadClass,
    readonly textLipSync: TextLipSync,
    node: HTMLElement,
  ) {
    // a new shape of the view (a phone turned, a window resized) is framed anew
    new ResizeObserver(() => this.frame()).observe(node);
  }

  static async create(node: HTMLElement): Promise<AvatarDriver> {
    // Loaded on demand: three.js and TalkingHead need a browser, and they are the bulk of the bundle.
    const [{ TalkingHead }, { LipsyncEn }] = await Promise.all([
      import("@met4citizen/talkinghead"),
      import("@met4citizen/talkinghead/modules/lipsync-en.mjs"),
    ]);
    let driver: AvatarDriver | null = null;
    const head = new TalkingHead(node, {
      // TalkingHead imports its lip-sync modules by a computed URL the bundler cannot see:
      // load none that way and hand it the bundled English one below.
      lipsyncModules: [],
      lipsyncLang: "en",
      // three.js' Draco decoder ships with the page (web/public/draco), never from a CDN.
      dracoDecoderPath: new URL("draco/", document.baseURI).href,
      cameraView: "upper",
      modelFPS: 60, // a viseme lands on the next frame: 60 fps keeps that under 17 ms
      avatarMood: "neutral",
      update: () => driver?.onFrame(),
    });
    const english = new LipsyncEn();
    head.lipsync.en = english;
    driver = new AvatarDriver(head, (word) => english.wordsToVisemes(english.preProcessText(word)), node);
    return driver;
  }

  async show(url: string, onProgress: (loaded: number, total: number) => void): Promise<void> {
    await this.head.showAvatar({ url, body: "F", lipsyncLang: "en", avatarMood: "neutral" },
      (e: ProgressEvent) => onProgress(e.loaded, e.total));
    this.frame();
    // again once TalkingHead has put the model from its rest pose into a standing one (arms
    // down, weight on one leg), which moves the shoulders and the head
    window.setTimeout(() => {
      this.frame();
      this.framedStanding = true;
    }, POSE_SETTLE_MS);
  }

  /** Where one of TalkingHead's bones is now (a three.js vector, in world units). */
  private world(name: Bone) {
    return this.head[name].getWorldPosition(this.head.camera.position.clone());
  }

  private bone(name: Bone): Point {
    const v = this.world(name);
    return { x: v.x, y: v.y, z: v.z };
  }

  /** Head and shoulders, eyes a third of the way down, from the avatar's own bones
   * (framing.ts), through TalkingHead's own camera placement. */
  private frame(): void {
    const h = this.head;
    if (!h.objectLeftEye || !h.objectRightEye || !h.objectLeftArm || !h.objectRightArm) return;
    const eyes = [this.bone("objectLeftEye"), this.bone("objectRightEye")];
    const f = videoCallFraming(eyes[0], eyes[1], this.bone("objectLeftArm"), this.bone("objectRightArm"),
      h.camera.aspect, h.camera.fov);
    h.setView("upper", upperViewOptions(f, (eyes[0].z + eyes[1].z) / 2, h.avatarHeight, h.camera.fov));
  }

  /** Where the eyes and the shoulder joints show now, as fractions of the view (0, 0: top left),
   * through the camera that renders them (the browser test checks the framing with it). */
  inFrame(): Record<"eyes" | "shoulders", { fromLeft: number; fromTop: number }> {
    const h = this.head;
    const at = (a: Bone, b: Bone) => {
      const v = this.world(a).add(this.world(b)).multiplyScalar(0.5).project(h.camera);
      return { fromLeft: (v.x + 1) / 2, fromTop: (1 - v.y) / 2 };
    };
    return { eyes: at("objectLeftEye", "objectRightEye"), shoulders: at("objectLeftArm", "objectRightArm") };
  }

  /** Page time → TalkingHead's animation clock (both advance with requestAnimationFrame). */
  private toAnimClock(pageTime: number): number {
    return pageTime + (this.head.animClock - this.head.animTimeLast);
  }

  /** Queues the mouth shapes; each ramps in before its start and out after its end, as
   * TalkingHead's own streaming lip-sync does. */
  speak(cues: VisemeCue[]): void {
    for (const c of cues) {
      if (c.viseme === "sil") continue;
      const t = this.toAnimClock(c.start);
      const d = c.duration;
      this.head.animQueue.push({
        template: { name: "viseme" },
        ts: [t - (2 * d) / 3, t + d / 2, t + d + d / 2],
        vs: { ["viseme_" + c.viseme]: [null, c.viseme === "PP" || c.viseme === "FF" ? 0.9 : 0.6, 0] },
      });
    }
  }

  /** Interruption (or the end): the mouth closes now and every queued shape is dropped.
   * TalkingHead alone would ease each viseme back to rest over a second or two after its shape
   * is dropped, the mouth still open after the voice stopped: they are set to rest at once. */
  stopSpeaking(): void {
    this.dropShapes();
    const morphs = (this.head.mtAvatar ?? {}) as Record<string, MorphState>;
    for (const [name, mt] of Object.entries(morphs)) {
      if (!name.startsWith("viseme_")) continue;
      mt.value = mt.applied = 0;
      mt.newvalue = mt.base = null;
      mt.v = 0;
      mt.needsUpdate = true;
    }
    this.head.resetLips();
  }

  /** A correction of the schedule: the shapes still to come replace the queued ones, and the
   * mouth goes on from where it is (no reset between). */
  replaceShapes(cues: VisemeCue[]): void {
    this.dropShapes();
    this.speak(cues);
  }

  private dropShapes(): void {
    this.head.animQueue = this.head.animQueue.filter((x: { template: { name: string } }) => x.template.name !== "viseme");
  }

  /** The page's view of the conversation, shown the way a person would show it. */
  setState(state: AvatarState): void {
    if (state === this.state) return;
    this.state = state;
    if (state === "listening") {
      this.head.setMood("neutral");
      this.head.makeEyeContact(2000);
    } else if (state === "thinking") {
      this.head.lookAhead(1200); // looks aside while it thinks
      if (Math.random() < 0.5) this.head.playGesture("index", 1.5);
    } else if (state === "speaking") {
      this.head.setMood("happy");
      this.head.lookAtCamera(500);
      this.head.speakWithHands(0, 0.4);
    } else {
      this.head.setMood("neutral");
    }
  }

  /** Current influence of a viseme morph target (tests check the mouth moves). */
  visemeLevel(): number {
    let max = 0;
    for (const mesh of this.head.morphs ?? []) {
      for (const [name, i] of Object.entries(mesh.morphTargetDictionary as Record<string, number>)) {
        if (name.startsWith("viseme_") && name !== "viseme_sil") max = Math.max(max, mesh.morphTargetInfluences[i]);
      }
    }
    return max;
  }

  private onFrame(): void {
    const t = this.head.animTimeLast;
    if (this.recordFrames) this.frames.push([t, this.head.animClock]);
    this.adaptQuality(t);
  }

  /** Every 2 s: when frames come slower than MIN_FPS (a weak or GPU-less machine), halve the
   * rendering resolution, down to MIN_PIXEL_RATIO. */
  private adaptQuality(t: number): void {
    this.fpsWindow.push(t);
    if (t - this.fpsWindow[0] < 2000) return;
    const fps = ((this.fpsWindow.length - 1) * 1000) / (t - this.fpsWindow[0]);
    this.fpsWindow = [t];
    const renderer = this.head.renderer;
    const ratio = renderer?.getPixelRatio?.() ?? 1;
    if (fps < MIN_FPS && ratio > MIN_PIXEL_RATIO) {
      renderer.setPixelRatio(Math.max(MIN_PIXEL_RATIO, ratio / 2));
      this.head.onResize?.();
    }
  }

  /** The rendering resolution factor adaptQuality settled on. */
  get pixelRatio(): number {
    return this.head.renderer?.getPixelRatio?.() ?? 1;
  }

  dispose(): void {
    this.head.stop?.();
    this.head.renderer?.dispose?.();
  }
}
