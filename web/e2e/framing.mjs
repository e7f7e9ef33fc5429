// How the avatar is framed at desktop and phone sizes: where its eyes and shoulder joints show in
// its view (fractions of the view, through the camera that renders them), with a screenshot of
// each page. Usage: node e2e/framing.mjs BASE_URL OUT_DIR  (prints JSON; tests/test_web_e2e.py)
import { writeFile } from "node:fs/promises";
import { launchChromium, waitForAvatar } from "./browser.mjs";

const [base, outDir] = process.argv.slice(2);
const sizes = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true },
};

// The camera eases to the framing over a second of TalkingHead's animation clock, twice (at load
// and once the standing pose has settled); in software WebGL on a loaded CI machine that took
// over 5 s of wall time, so a fixed wait measured a camera still on its way. Waits for the second
// framing, then until the camera has not moved for a second.
async function cameraAtRest(page) {
  const started = Date.now();
  await page.waitForFunction(() => window.__avatar.driver.framedStanding, null, { timeout: 60_000 });
  let last = null;
  let still = 0;
  while (Date.now() - started < 60_000) {
    const at = await page.evaluate(() => window.__avatar.driver.head.camera.position.toArray());
    still = last && at.every((v, i) => Math.abs(v - last[i]) < 1e-4) ? still + 1 : 0;
    if (still >= 4) return Date.now() - started;
    last = at;
    await page.waitForTimeout(250);
  }
  throw new Error(`the camera was still moving after 60 s (${JSON.stringify(last)})`);
}

// The idle motion sways the head (a few hundredths of the view) and changes the standing pose now
// and then: the median of samples over two seconds is where the avatar usually is.
async function medianInFrame(page) {
  const samples = [];
  for (let i = 0; i < 9; i++) {
    samples.push(await page.evaluate(() => window.__avatar.driver.inFrame()));
    await page.waitForTimeout(250);
  }
  const median = (values) => values.sort((a, b) => a - b)[values.length >> 1];
  const part = (key) => ({
    fromLeft: median(samples.map((s) => s[key].fromLeft)),
    fromTop: median(samples.map((s) => s[key].fromTop)),
  });
  return { eyes: part("eyes"), shoulders: part("shoulders") };
}

const result = {};
const browser = await launchChromium();
try {
  for (const [name, options] of Object.entries(sizes)) {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    await page.goto(base);
    await waitForAvatar(page);
    const settledAfterMs = await cameraAtRest(page);
    const view = await page.locator('[data-testid="avatar"]').boundingBox();
    result[name] = { ...(await medianInFrame(page)), view, settledAfterMs };
    await writeFile(`${outDir}/framing-${name}.png`, await page.screenshot());
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
