// What the browser scripts share: Debian's Chromium with software WebGL, the "nothing leaves this
// host" watch, and a screenshot's pixel statistics (blank or flat canvases fail the tests).
import { chromium } from "playwright-core";

export const SOFTWARE_GL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--no-sandbox"];

export function launchChromium(extraArgs = []) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: [...extraArgs, ...SOFTWARE_GL] });
}

// Every request and WebSocket the page opens to another host than `origin`'s goes into `result`,
// with console errors and uncaught exceptions.
export function watchPage(page, origin, result) {
  result.foreignRequests ??= [];
  result.consoleErrors ??= [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (!["data:", "blob:"].includes(u.protocol) && u.hostname !== origin.hostname) result.foreignRequests.push(r.url());
  });
  page.on("websocket", (ws) => {
    if (new URL(ws.url()).hostname !== origin.hostname) result.foreignRequests.push(ws.url());
  });
  page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => result.consoleErrors.push(String(e.stack ?? e)));
}

// The avatar is in the scene and its loading indicator gone.
export async function waitForAvatar(page) {
  await page.waitForFunction(() => window.__avatar?.driver?.head?.avatar, null, { timeout: 120_000 });
  await page.waitForSelector('[data-testid="avatar-progress"]', { state: "detached", timeout: 120_000 });
}

// Runs in the page (page.evaluate): size, luminance spread and colour count of a PNG.
export async function pixelStats(b64) {
  const img = new Image();
  img.src = `data:image/png;base64,${b64}`;
  await img.decode();
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const { data } = g.getImageData(0, 0, c.width, c.height);
  const colours = new Set();
  let sum = 0, sq = 0;
  for (let i = 0; i < data.length; i += 4) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    sum += y; sq += y * y;
    if (colours.size < 5000) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  const n = data.length / 4;
  return { width: c.width, height: c.height, std: Math.sqrt(sq / n - (sum / n) ** 2), colours: colours.size };
}
