// Where the camera stands: the avatar framed the way a video call frames a person — head and
// shoulders, eyes a third of the way down — measured on the model's own bones, so any avatar
// (bundled or a person's own file, tall or short, near the origin or not) is framed alike.
// Pure, so its rules are unit-tested; driver.ts feeds it the bones and applies the result.

export interface Point {
  x: number;
  y: number;
  z: number;
}

/** The eyes' line, from the top of the frame (the rule of thirds, as cameras frame faces). */
export const EYES_FROM_TOP = 1 / 3;
/** The shoulder joints' line, from the top: the shoulders and the chest show below them, and
 * the head has room above it (closer, the crown of a tall hairdo touched the top). */
export const SHOULDERS_FROM_TOP = 0.66;
/** A narrow (phone, portrait) frame is widened until it is at least this many times the width
 * between the shoulder joints: otherwise the face fills a phone and the shoulders are cut. */
export const MIN_WIDTH_IN_SHOULDERS = 1.4;

export interface Framing {
  centerX: number; // what the camera looks at (world units, metres for these models)
  centerY: number;
  distance: number; // from the eyes' plane, along the view direction (+z)
  height: number; // the frame's height at the eyes' distance
}

export function videoCallFraming(leftEye: Point, rightEye: Point, leftShoulder: Point,
  rightShoulder: Point, aspect: number, fovDeg: number): Framing {
  const eyeY = (leftEye.y + rightEye.y) / 2;
  const shoulderY = (leftShoulder.y + rightShoulder.y) / 2;
  const shoulderWidth = Math.abs(leftShoulder.x - rightShoulder.x);
  let height = (eyeY - shoulderY) / (SHOULDERS_FROM_TOP - EYES_FROM_TOP);
  if (aspect > 0) height = Math.max(height, (MIN_WIDTH_IN_SHOULDERS * shoulderWidth) / aspect);
  const top = eyeY + EYES_FROM_TOP * height;
  return {
    centerX: (leftEye.x + rightEye.x) / 2,
    centerY: top - height / 2,
    distance: height / 2 / Math.tan((fovDeg * Math.PI) / 360),
    height,
  };
}

/** TalkingHead's setView("upper", options) that puts its camera at `f`: it places the camera at
 * z = 4.5 + cameraDistance and y = (1 - cameraY) tan(fov/2) z + 2/3 avatarHeight, looking
 * straight ahead (node_modules/@met4citizen/talkinghead/modules/talkinghead.mjs, setView). */
export function upperViewOptions(f: Framing, eyesZ: number, avatarHeight: number, fovDeg: number) {
  const z = eyesZ + f.distance;
  const t = Math.tan((fovDeg * Math.PI) / 360);
  return {
    cameraDistance: z - 4.5,
    cameraY: 1 - (f.centerY - (2 * avatarHeight) / 3) / (t * z),
    cameraX: -f.centerX / (t * z),
  };
}
