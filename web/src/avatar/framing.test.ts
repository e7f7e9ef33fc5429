import { describe, expect, it } from "vitest";
import { EYES_FROM_TOP, type Framing, type Point, SHOULDERS_FROM_TOP, upperViewOptions, videoCallFraming } from "./framing";

/** Where a point shows in the frame: fractions of the width from the left and of the height
 * from the top (0.5, 0.5 is the centre), for a camera at `framing` looking along -z. */
function placeInFrame(p: Point, eyesZ: number, f: Framing, aspect: number): { fromLeft: number; fromTop: number } {
  const scale = f.height / f.distance; // the frame's height per unit of distance
  const d = f.distance + eyesZ - p.z;
  return {
    fromLeft: 0.5 + (p.x - f.centerX) / (scale * d * aspect),
    fromTop: 0.5 - (p.y - f.centerY) / (scale * d),
  };
}

const FOV = 10; // TalkingHead's camera

/** A person's bones (metres): eyes at `eyeY`, shoulder joints 0.18 m lower and 0.32 m apart. */
function person(eyeY: number, x = 0, z = 0.1, scale = 1) {
  const p = (dx: number, y: number): Point => ({ x: x + dx * scale, y, z });
  return { le: p(0.03, eyeY), re: p(-0.03, eyeY), ls: p(0.16, eyeY - 0.18 * scale), rs: p(-0.16, eyeY - 0.18 * scale) };
}

describe("videoCallFraming", () => {
  it("puts the eyes a third of the way down and the shoulders near the bottom, on a desktop", () => {
    const b = person(1.6);
    const f = videoCallFraming(b.le, b.re, b.ls, b.rs, 16 / 9, FOV);
    const eyes = placeInFrame(b.le, 0.1, f, 16 / 9);
    expect(eyes.fromTop).toBeCloseTo(EYES_FROM_TOP);
    expect(placeInFrame(b.ls, 0.1, f, 16 / 9).fromTop).toBeCloseTo(SHOULDERS_FROM_TOP);
    expect(placeInFrame({ x: 0, y: 1.6, z: 0.1 }, 0.1, f, 16 / 9).fromLeft).toBeCloseTo(0.5);
  });

  it("frames a short avatar, or one away from the origin, the same way", () => {
    for (const b of [person(1.1, 0.4, -0.3), person(1.6, 0, 0.1, 0.7)]) {
      const f = videoCallFraming(b.le, b.re, b.ls, b.rs, 4 / 3, FOV);
      expect(placeInFrame(b.le, b.le.z, f, 4 / 3).fromTop).toBeCloseTo(EYES_FROM_TOP);
      expect(placeInFrame(b.ls, b.le.z, f, 4 / 3).fromTop).toBeCloseTo(SHOULDERS_FROM_TOP);
      expect(placeInFrame({ ...b.le, x: (b.le.x + b.re.x) / 2 }, b.le.z, f, 4 / 3).fromLeft).toBeCloseTo(0.5);
    }
  });

  it("on a phone held upright, keeps the eyes a third down and widens the frame to the shoulders", () => {
    const b = person(1.6);
    const aspect = 390 / 844;
    const f = videoCallFraming(b.le, b.re, b.ls, b.rs, aspect, FOV);
    expect(placeInFrame(b.le, 0.1, f, aspect).fromTop).toBeCloseTo(EYES_FROM_TOP);
    const l = placeInFrame(b.ls, 0.1, f, aspect).fromLeft;
    const r = placeInFrame(b.rs, 0.1, f, aspect).fromLeft;
    expect(l).toBeLessThanOrEqual(1.0001);
    expect(r).toBeGreaterThanOrEqual(-0.0001);
    // more of the chest shows instead: the shoulders sit higher than on a desktop
    expect(placeInFrame(b.ls, 0.1, f, aspect).fromTop).toBeLessThan(SHOULDERS_FROM_TOP);
  });
});

describe("upperViewOptions", () => {
  it("gives the options with which TalkingHead's setView('upper') puts its camera at the framing", () => {
    const b = person(1.45, 0.2, 0.05);
    const f = videoCallFraming(b.le, b.re, b.ls, b.rs, 1.2, FOV);
    const avatarHeight = 1.65;
    const o = upperViewOptions(f, 0.05, avatarHeight, FOV);
    // TalkingHead's own arithmetic (talkinghead.mjs setView, view "upper")
    const t = Math.tan((FOV * Math.PI) / 360);
    const z = 4.5 + o.cameraDistance;
    expect(z).toBeCloseTo(0.05 + f.distance);
    expect((1 - o.cameraY) * t * z + (2 * avatarHeight) / 3).toBeCloseTo(f.centerY);
    expect(-o.cameraX * t * z).toBeCloseTo(f.centerX);
  });
});
