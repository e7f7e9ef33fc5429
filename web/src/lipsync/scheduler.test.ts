import { describe, expect, it } from "vitest";
import type { SpeechChunkMessage } from "../gen/protocol";
import { estimateTimings, MOUTH_LEAD_MS, mouthCues, REANCHOR_MS, SpeechScheduler, STOP_TAIL_MAX_MS } from "./scheduler";

// "Hello world" as the bot sends it: words and visemes tiling 1000 ms of audio.
function chunk(over: Partial<SpeechChunkMessage> = {}): SpeechChunkMessage {
  return {
    v: 1, type: "speech.chunk", turn_id: "t1", seq: 0, text: "Hello world", offset_ms: 0,
    duration_ms: 1000, samples: 24000, sample_rate: 24000, source: "model", lead_ms: 100, onset_ms: null,
    words: ["Hello", "world"], wtimes: [100, 500], wdurations: [400, 400],
    visemes: ["sil", "kk", "E", "O", "sil", "U", "RR", "DD", "sil"],
    vtimes: [0, 100, 200, 300, 500, 500, 700, 800, 900],
    vdurations: [100, 100, 100, 200, 0, 200, 100, 100, 100],
    ptimes: [0], pdurations: [100], voice: null, // quiet until "Hello" is heard
    ...over,
  };
}
const stop = (turn_id = "t1", sent_ms: number | null = null) =>
  ({ v: 1 as const, type: "speech.stop" as const, turn_id, reason: "interrupted" as const, sent_ms });

describe("SpeechScheduler", () => {
  it("places a chunk at arrival + lead + receive delay", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk(), 1000, 60)!;
    expect(c.start).toBe(1160);
    expect(c.words.map((w) => w.start)).toEqual([1260, 1660]);
    expect(s.visemeAt(1160 + 150)).toBe("kk");
    expect(s.visemeAt(1159)).toBeNull();
    expect(s.wordAt(1700)?.word.word).toBe("world");
  });

  it("chains back-to-back chunks on the turn's timeline, not on their arrival jitter", () => {
    const s = new SpeechScheduler();
    s.add(chunk(), 1000, 60);
    // the second message arrives 40 ms "early" relative to its audio: the chain wins
    const c = s.add(chunk({ seq: 1, offset_ms: 1000, lead_ms: 900 }), 1220, 60)!;
    expect(c.start).toBe(2160);
    expect(c.words.map((w) => w.index)).toEqual([2, 3]);
  });

  it("re-anchors after an underrun (the audio had a gap) or a large disagreement", () => {
    const s = new SpeechScheduler();
    s.add(chunk(), 1000, 60);
    const gap = s.add(chunk({ seq: 1, offset_ms: 1000, lead_ms: 0 }), 3000, 60)!;
    expect(gap.start).toBe(3060);
    const drift = s.add(chunk({ seq: 2, offset_ms: 2000, lead_ms: 500 }), 4000 + REANCHOR_MS, 60)!;
    expect(drift.start).toBe(4000 + REANCHOR_MS + 560);
  });

  it("a late message drops the visemes already heard and starts mid-chunk", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk({ lead_ms: 0 }), 1000, -450)!; // its audio began 450 ms ago
    expect(c.late).toBe(450);
    expect(c.visemes[0].start).toBeLessThanOrEqual(1000);
    expect(c.visemes.every((v) => v.start + v.duration > 1000)).toBe(true);
    expect(c.visemes.map((v) => v.viseme)).toEqual(["O", "sil", "U", "RR", "DD", "sil"]);
  });

  it("a missing message does not shift the chunks after it", () => {
    const s = new SpeechScheduler();
    s.add(chunk(), 1000, 60);
    const third = s.add(chunk({ seq: 2, offset_ms: 2000, lead_ms: 1800 }), 1300, 60)!; // seq 1 lost
    expect(third.start).toBe(3160);
    expect(s.visemeAt(2500)).toBeNull(); // no invented mouth shapes for the lost chunk
  });

  it("speech.stop cuts the mouth now and ignores the turn's later chunks", () => {
    const s = new SpeechScheduler();
    s.add(chunk(), 1000, 60);
    s.stop(stop(), 1400);
    expect(s.visemeAt(1399)).not.toBeNull();
    expect(s.visemeAt(1400)).toBeNull();
    expect(s.speakingAfter(1400)).toBe(false);
    expect(s.add(chunk({ seq: 1, offset_ms: 1000 }), 1500, 60)).toBeNull();
  });

  it("speech.stop with sent_ms: the mouth goes on with the voice still on its way, then stops", () => {
    const s = new SpeechScheduler();
    s.add(chunk(), 1000, 60); // heard 1160 ... 2160
    // the bot had sent 600 ms of the turn's audio when it stopped: heard until 1760
    expect(s.stop(stop("t1", 600), 1400)).toBe(1760);
    expect(s.visemeAt(1700)).toBe("U");
    expect(s.wordAt(1700)?.word.word).toBe("world");
    expect(s.visemeAt(1760)).toBeNull();
    expect(s.speakingAfter(1760)).toBe(false);
    expect(s.add(chunk({ seq: 1, offset_ms: 1000 }), 1500, 60)).toBeNull();
  });

  it("speech.stop with sent_ms already heard, or far ahead: now, or at most STOP_TAIL_MAX_MS on", () => {
    const heard = new SpeechScheduler();
    heard.add(chunk(), 1000, 60);
    expect(heard.stop(stop("t1", 100), 1400)).toBe(1400);
    expect(heard.visemeAt(1400)).toBeNull();
    const far = new SpeechScheduler();
    far.add(chunk({ duration_ms: 9000 }), 1000, 60);
    expect(far.stop(stop("t1", 8000), 1400)).toBe(1400 + STOP_TAIL_MAX_MS);
    const unknown = new SpeechScheduler(); // a stop for a turn never scheduled here
    expect(unknown.stop(stop("t5", 600), 1400)).toBe(1400);
  });

  it("a stopped turn's voice heard later than predicted moves the mouth's close with it", () => {
    // after a gap (lead_ms 0) a chunk is placed with the receive delay, which a loaded receiver
    // understates: one CI run heard it 300 ms late, after the stop had come (the mouth closed
    // 420 ms before the voice did)
    const s = new SpeechScheduler();
    const c = s.add(chunk({ lead_ms: 0 }), 1000, 60)!; // 1060 ... 2060, "Hello" from 1160
    expect(s.stop(stop("t1", 600), 1100)).toBe(1660); // sent until 600 ms in
    expect(s.stopsAt("t1")).toBe(1660);
    expect(s.align(1460)).toBe(c); // the first sound, 300 ms late
    expect(s.stopsAt("t1")).toBe(1960);
    expect(c.start).toBe(1360);
    expect(s.visemeAt(1950)).toBe("U"); // the sent audio's shapes, moved with it
    expect(s.visemeAt(1960)).toBeNull();
    // a sound the bot never sent, or one after a later turn began, moves nothing
    const unsent = new SpeechScheduler();
    unsent.add(chunk({ lead_ms: 0 }), 1000, 60);
    unsent.stop(stop("t1", 50), 1100); // stopped before "Hello" was sent
    expect(unsent.align(1460)).toBeNull();
    expect(unsent.stopsAt("t1")).toBe(1110);
    const next = new SpeechScheduler();
    next.add(chunk({ lead_ms: 0 }), 1000, 60);
    next.stop(stop("t1", 600), 1100);
    next.add(chunk({ turn_id: "t2", lead_ms: 0 }), 1150, 60); // t2's first sound: 1310
    expect(next.align(1460)!.turnId).toBe("t2");
    expect(next.stopsAt("t1")).toBe(1660);
    expect(new SpeechScheduler().stopsAt("t1")).toBeNull();
  });

  it("a stopped turn's voice that goes quiet where its schedule had voice ends its mouth there", () => {
    // one CI run: the voice on its way after a stop was heard for 290 ms, the mouth went on to
    // 614 ms (its voice dropped by the receiver, or the turn placed late)
    const s = new SpeechScheduler();
    const c = s.add(chunk({ lead_ms: 0 }), 1000, 60)!; // 1060 ... 2060, "Hello" from 1160
    expect(s.align(1160)).toBe(c);
    expect(s.stop(stop("t1", 900), 1300)).toBe(1960);
    expect(s.voiceEnded(1300, 100)).toBeNull(); // shorter than a pause: a dip, not an end
    expect(s.voiceEnded(1300, 150)).toBe(1300); // "O" of "Hello" was due: the voice has ended
    expect(s.stopsAt("t1")).toBe(1300);
    expect(s.visemeAt(1350)).toBeNull();
    expect(s.speakingAfter(1300)).toBe(false);
    expect(s.voiceEnded(1300, 250)).toBeNull(); // already ended there
  });

  it("quiet where the stopped turn has a pause, before its voice is placed on an onset, or in a turn going on, ends nothing", () => {
    const pause = new SpeechScheduler();
    const c = pause.add(chunk({ lead_ms: 0, visemes: ["sil", "kk", "E", "O", "sil", "sil", "RR", "DD", "sil"] }), 1000, 60)!;
    pause.align(1160);
    pause.stop(stop("t1", 900), 1300);
    expect(c.start).toBe(1060);
    expect(pause.voiceEnded(1520, 160)).toBeNull(); // 1560 ... 1760 is quiet in its schedule too
    expect(pause.stopsAt("t1")).toBe(1960);
    const unheard = new SpeechScheduler(); // placed by the receive delay, its onset not heard yet
    unheard.add(chunk({ lead_ms: 0 }), 1000, 60);
    unheard.stop(stop("t1", 900), 1100);
    expect(unheard.voiceEnded(1100, 300)).toBeNull(); // it may be on its way still, later
    const gap = new SpeechScheduler(); // quiet since the voice of a chunk before the stop's
    gap.add(chunk({ lead_ms: 0 }), 1000, 60);
    gap.align(1160);
    gap.add(chunk({ seq: 1, offset_ms: 1000, lead_ms: 0 }), 2500, 60); // placed 2560, not heard yet
    gap.stop(stop("t1", 1500), 2600);
    expect(gap.stopsAt("t1")).toBe(3060);
    expect(gap.voiceEnded(1900, 800)).toBeNull();
    const live = new SpeechScheduler();
    live.add(chunk({ lead_ms: 0 }), 1000, 60);
    live.align(1160);
    expect(live.voiceEnded(1300, 300)).toBeNull();
    expect(live.visemeAt(1400)).toBe("O");
  });

  it("a stop that overtakes its turn's first chunk still silences that turn", () => {
    const s = new SpeechScheduler();
    s.stop(stop("t9"), 900);
    expect(s.add(chunk({ turn_id: "t9" }), 1000, 60)).toBeNull();
  });

  it("a new turn ends what is left of the previous one", () => {
    const s = new SpeechScheduler();
    s.add(chunk({ duration_ms: 5000 }), 1000, 60);
    s.add(chunk({ turn_id: "t2" }), 2000, 60);
    expect(s.wordAt(2200)).toBeNull(); // t1 cut at t2's start (2160)
    expect(s.wordAt(2300)?.turnId).toBe("t2");
  });

  it("falls back to text-based visemes over the chunk's duration when timings are missing", () => {
    const textLipSync = (w: string) => ({ visemes: [...w].map(() => "aa"), times: [...w].map((_, i) => i * 10), durations: [...w].map(() => 10) });
    const s = new SpeechScheduler(textLipSync);
    const c = s.add(chunk({ words: [], wtimes: [], wdurations: [], visemes: [], vtimes: [], vdurations: [], source: "estimate" }), 1000, 60)!;
    expect(c.estimated).toBe(true);
    expect(c.words.map((w) => w.word)).toEqual(["Hello", "world"]);
    expect(c.visemes).toHaveLength(10);
    const end = c.visemes.at(-1)!;
    expect(end.start + end.duration).toBeCloseTo(c.end); // spread over exactly the chunk's audio
  });

  it("the heard onset of a turn's first sound corrects the predicted place of the whole turn", () => {
    const s = new SpeechScheduler();
    const first = s.add(chunk(), 1000, 60)!; // predicted: starts 1160, first voiced sound at 1260
    expect(first.voiced).toBe(1260);
    const next = s.add(chunk({ seq: 1, offset_ms: 1000, lead_ms: 900 }), 1150, 60)!;
    expect(s.align(1300)).toBe(first); // heard 40 ms later than predicted
    expect(first.words[0].start).toBe(1300);
    expect(next.start).toBe(2200); // the chained chunk moves with it
    expect(s.visemeAt(1301)).toBe("kk");
    const later = s.add(chunk({ seq: 2, offset_ms: 2000, lead_ms: 1800 }), 1400, 60)!;
    expect(later.start).toBe(3200); // and so do chunks that arrive afterwards
    expect(s.align(1310)).toBeNull(); // each anchored chunk is aligned once
  });

  it("aligns on the bot's stated onset of the voice when the message has one", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk({ onset_ms: 60 }), 1000, 60)!; // audible 40 ms before "Hello" starts
    expect(c.voiced).toBe(1220);
    s.align(1250);
    expect(c.words[0].start).toBe(1290);
  });

  it("a message that arrives after its audio began is placed on the onset heard before it", () => {
    const s = new SpeechScheduler();
    expect(s.align(700)).toBeNull(); // nothing scheduled yet: kept
    const c = s.add(chunk({ lead_ms: 0, onset_ms: 60 }), 1000, 60)!;
    expect(c.start).toBe(640);
    expect(c.shift).toBe(-420);
    expect(c.late).toBe(360);
    expect(c.visemes.every((v) => v.start + v.duration > 1000)).toBe(true); // only what is left
    const other = s.add(chunk({ turn_id: "t2", lead_ms: 0 }), 1500, 60)!;
    expect(other.shift).toBe(0); // each onset is used once
    const paused = new SpeechScheduler();
    paused.add(chunk({ duration_ms: 3000 }), 1000, 60);
    paused.align(2500); // a pause inside that chunk's speech: not kept
    expect(paused.add(chunk({ turn_id: "t3", lead_ms: 0 }), 2600, 60)!.shift).toBe(0);
    const stale = new SpeechScheduler();
    stale.align(700);
    expect(stale.add(chunk({ lead_ms: 0 }), 700 + 1001, 60)!.shift).toBe(0); // too long ago
  });

  it("an onset far from any anchored chunk's first sound changes nothing", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk(), 1000, 60)!;
    expect(s.align(1260 + 1001)).toBeNull(); // up to 1 s late, 400 ms early
    expect(s.align(1260 - 401)).toBeNull();
    expect(s.align(800 - 1)).toBeNull();
    expect(c.start).toBe(1160);
    s.stop(stop(), 1100);
    expect(s.align(1260)).toBeNull(); // nor does one for a stopped turn
  });

  it("a hole in the heard voice mid-word holds the rest of the turn back by its length", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk(), 1000, 60)!; // starts 1160: kk 1260, E 1360, O 1460-1660, U 1660...
    const next = s.add(chunk({ seq: 1, offset_ms: 1000, lead_ms: 900 }), 1150, 60)!;
    s.align(1260); // the turn's first sound, where predicted
    // the voice went quiet at 1380 (inside "E") and came back at 1680
    expect(s.align(1680, 300)).toBe(c);
    expect(c.drift).toBe(300);
    expect(s.visemeAt(1370)).toBe("E"); // what was heard before the hole stays
    expect(s.visemeAt(1500)).toBeNull(); // nothing during the hole
    expect(s.visemeAt(1700)).toBe("E"); // the rest of "E" comes back with the voice
    expect(s.visemeAt(1770)).toBe("O");
    expect(c.words.map((w) => w.start)).toEqual([1260, 1960]); // "Hello" began before the hole
    expect(c.end).toBe(2460);
    expect(next.start).toBe(2460);
    const later = s.add(chunk({ seq: 2, offset_ms: 2000, lead_ms: 1800 }), 1400, 60)!;
    expect(later.start).toBe(3460); // chunks that arrive afterwards keep the turn's new timeline
  });

  it("a pause the speech has (a silent viseme), or a short or endless quiet, is not a hole", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk({ duration_ms: 1000 }), 1000, 60)!;
    expect(s.align(1260, 300)).toBe(c); // the first sound after the turn's silence: the anchor
    expect(s.align(2000, 100)).toBeNull(); // quiet from 1900 ("DD"), but too short
    expect(s.align(2300, 200)).toBeNull(); // quiet from 2100: the closing "sil"
    expect(s.align(2700, 1300)).toBeNull(); // quiet from 1400 ("E"), longer than any hole we wait for
    expect(c.drift).toBe(0);
    expect(c.end).toBe(2160);
  });

  // "Hello, world": a 200 ms pause after the comma, announced by the bot
  const paused = (over: Partial<SpeechChunkMessage> = {}) => chunk({
    text: "Hello, world", wtimes: [100, 700], wdurations: [400, 300],
    visemes: ["sil", "kk", "E", "O", "sil", "U", "RR", "DD"],
    vtimes: [0, 100, 200, 300, 500, 700, 800, 900], vdurations: [100, 100, 100, 200, 200, 100, 100, 100],
    ptimes: [0, 500], pdurations: [100, 200], ...over,
  });

  it("tells the receive delay's error only for chunks it placed and then heard (onAligned)", () => {
    const seen: [string, number, number][] = [];
    const s = new SpeechScheduler(null, (c) => seen.push([c.turnId, c.seq, c.shift]));
    const c = s.add(paused(), 1000, 60)!; // voiced 1260; the pause 1660-1860
    s.add(paused({ seq: 1, offset_ms: 1000, lead_ms: 900 }), 1150, 60); // chained: not predicted
    s.align(1340, 5000); // heard 80 ms late
    s.align(2010, 350); // a pause heard longer: the audio's doing, not the delay's
    expect(c.drift).toBe(70);
    s.align(700); // an onset before the next turn's message, which lands on it: the message
    expect(s.add(paused({ turn_id: "t2", lead_ms: 0 }), 1000, 60)!.shift).toBe(-460); // was late
    expect(seen).toEqual([["t1", 0, 80]]);
  });

  it("an onset that ends an announced pause moves what follows onto it", () => {
    const s = new SpeechScheduler();
    const c = s.add(paused(), 1000, 60)!; // starts 1160; the pause 1660-1860, "world" at 1860
    s.align(1260, 5000); // the turn's first sound
    // the jitter buffer stretched the pause by 150 ms
    expect(s.align(2010, 350)).toBe(c);
    expect(c.words[1].start).toBe(2010);
    expect(s.visemeAt(1900)).toBeNull(); // the mouth rests through the longer pause
    expect(s.visemeAt(2015)).toBe("U");
    expect(c.drift).toBe(150);
    expect(s.align(2010, 350)).toBeNull(); // each pause is matched once
    // ...or shrank it by 60 ms
    const t = new SpeechScheduler();
    const d = t.add(paused(), 1000, 60)!;
    t.align(1260, 5000);
    expect(t.align(1800, 160)).toBe(d);
    expect(d.words[1].start).toBe(1800);
    expect(d.end).toBe(2100);
  });

  it("a pause is told from a hole by the bot's announced quiet, not by the visemes", () => {
    // Kokoro often puts a pause into a stop consonant's duration ("named Kova": a long "DD")
    const s = new SpeechScheduler();
    const c = s.add(paused({ visemes: ["sil", "kk", "E", "O", "DD", "U", "RR", "DD"] }), 1000, 60)!;
    s.align(1260, 5000);
    expect(s.align(1860, 200)).toBe(c); // quiet from 1660, inside "DD": the announced pause
    expect(c.drift).toBe(0);
    expect(c.words[1].start).toBe(1860);
  });

  it("estimateTimings skips punctuation-only tokens", () => {
    const t = estimateTimings(chunk({ text: "Well — yes!" }), () => ({ visemes: ["E"], times: [0], durations: [1] }));
    expect(t.words).toEqual(["Well", "yes!"]);
    expect(t.wtimes).toEqual([0, 500]);
  });

  it("shows each mouth shape MOUTH_LEAD_MS before it is heard, inside the broadcast window", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk(), 1000, 60)!;
    const shown = mouthCues(c.visemes);
    expect(shown.map((v) => v.viseme)).toEqual(c.visemes.map((v) => v.viseme));
    expect(shown.map((v) => v.start)).toEqual(c.visemes.map((v) => v.start - MOUTH_LEAD_MS));
    expect(shown.map((v) => v.duration)).toEqual(c.visemes.map((v) => v.duration));
    // the schedule itself stays where the sound is heard: "kk" is heard from 1260 on
    expect(s.visemeAt(1265)).toBe("kk");
    // shown on a 60 Hz display's next frame (0-17 ms later), the shape stays inside IS-191
    // (-45 ... +15 ms, mouth - sound)
    for (const frameDelay of [0, 8, 16.7]) {
      const offset = shown[1].start + frameDelay - c.visemes[1].start;
      expect(offset).toBeGreaterThanOrEqual(-45);
      expect(offset).toBeLessThanOrEqual(15);
    }
  });

  it("follows the jitter buffer squeezing the audio mid-turn: what is not heard yet comes sooner", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk(), 1000, 60)!; // heard 1160 ... 2160, words at 1260 and 1660
    const next = s.add(chunk({ seq: 1, offset_ms: 1000, lead_ms: 900 }), 1260, 60)!; // 2160 ...
    expect(s.stretch(1500, -20)).toBe(c);
    expect(c.words.map((w) => w.start)).toEqual([1260, 1640]); // "Hello" was heard already
    expect(next.start).toBe(2140);
    expect(next.words.map((w) => w.start)).toEqual([2240, 2640]);
    expect(c.drift).toBe(-20);
    // stretched back later; once the turn is stopped, nothing moves
    s.stretch(1600, 20);
    expect(next.start).toBe(2160);
    s.stop(stop(), 1700);
    expect(s.stretch(1800, -20)).toBeNull();
    expect(next.start).toBe(2160);
  });

  it("ignores a stretch while no turn is under way", () => {
    const s = new SpeechScheduler();
    const c = s.add(chunk(), 1000, 60)!;
    expect(s.stretch(5000, -20)).toBeNull(); // long after the turn was heard
    expect(c.start).toBe(1160);
  });

  it("follows a steady drift between the bot's clock and the page's: small squeezes add up", () => {
    // The jitter buffer makes up for a sender whose clock runs fast by squeezing a little audio
    // now and then: 2 ms every 200 ms here (1 %), over a 2 s chunk.
    const s = new SpeechScheduler();
    const long = chunk({ duration_ms: 2000, samples: 48000, wtimes: [100, 1500], wdurations: [400, 400] });
    const c = s.add(long, 1000, 60)!; // heard 1160 ... 3160
    for (let t = 1200; t < 2600; t += 200) s.stretch(t, -2);
    expect(c.words[1].start).toBe(1160 + 1500 - 14);
    expect(c.end).toBe(3160 - 14);
  });
});
