// What the browser scripts share: Debian's Chromium with software WebGL, the "nothing leaves this
// host" watch, and a screenshot's pixel statistics (blank or flat canvases fail the tests).
import { execFileSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { chromium } from "playwright-core";
import puppeteer from "puppeteer-core";
import sharp from "sharp";

export const SOFTWARE_GL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--no-sandbox"];

export function launchChromium(extraArgs = []) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: [...extraArgs, ...SOFTWARE_GL] });
}

// Debian's Firefox ESR over WebDriver BiDi, windowed (run it under xvfb-run: headless, it finds
// no GL driver for WebGL), with a generated microphone and no permission prompt.
export function launchFirefox() {
  return puppeteer.launch({
    browser: "firefox",
    protocol: "webDriverBiDi",
    executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
    headless: false,
    extraPrefsFirefox: {
      "media.navigator.streams.fake": true, // a generated microphone and camera
      "media.navigator.permission.disabled": true, // no permission prompt
      "webgl.force-enabled": true, // software WebGL on a machine without a GPU
    },
  });
}

// Runs in the page (page.evaluate): what it shows of its connection, and how far the link's
// open() got (Link.progress), for a conversation that did not connect.
export function connectionShown() {
  return {
    state: document.querySelector('[data-testid="connection"]')?.getAttribute("data-state"),
    text: document.body.innerText.slice(0, 2000),
    steps: window.__avatar?.conversation?.linkProgress?.(),
  };
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

// A browser's main threads and its busy ones (state, CPU share, where each waits in the kernel),
// for when a page stops answering: a main thread running (R) or asleep in a futex (S) says which
// kind of hang it is.
export function threadsOf(rootPid) {
  if (!rootPid) return [];
  const rows = execFileSync("ps", ["-eL", "-o", "pid=,ppid=,tid=,stat=,pcpu=,wchan:24=,comm="], { encoding: "utf8" })
    .trim().split("\n").map((line) => line.trim().split(/\s+/));
  const tree = new Set([String(rootPid)]);
  let size = 0;
  while (tree.size > size) { // children, then theirs (content processes are the parent's)
    size = tree.size;
    for (const [pid, ppid] of rows) if (tree.has(ppid)) tree.add(pid);
  }
  // every thread of a process whose main thread waits on a lock (a hung page): who holds it
  const waiting = new Set(rows.filter(([pid, , tid, , , wchan]) => tree.has(pid) && pid === tid && wchan.startsWith("futex")).map(([pid]) => pid));
  // and the parent's audio threads: a page's audio calls are served there (AudioIPC, cubeb)
  const audio = (pid, name) => waiting.size > 0 && pid === String(rootPid) && /audio|cubeb|pulse/i.test(name);
  return rows.filter(([pid, , tid, , cpu, , ...name]) => tree.has(pid)
    && (pid === tid || waiting.has(pid) || Number(cpu) >= 5 || audio(pid, name.join(" "))))
    .map((r) => r.join(" "));
}

// The avatar is in the scene and its loading indicator gone.
export async function waitForAvatar(page) {
  await page.waitForFunction(() => window.__avatar?.driver?.head?.avatar, null, { timeout: 120_000 });
  await page.waitForSelector('[data-testid="avatar-progress"]', { state: "detached", timeout: 120_000 });
}

// Size, luminance spread and colour count of a screenshot (PNG bytes), worked out here rather
// than in the page: an evaluate waits for the page, and Firefox on software WebGL under load once
// left one unanswered for puppeteer's whole 180 s (a CI run), for numbers the test can get alone.
export async function pixelStats(png) {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const colours = new Set();
  let sum = 0, sq = 0;
  for (let i = 0; i < data.length; i += 3) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    sum += y; sq += y * y;
    if (colours.size < 5000) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  }
  const n = data.length / 3;
  return { width: info.width, height: info.height, std: Math.sqrt(sq / n - (sum / n) ** 2), colours: colours.size };
}

// Runs in the page (page.evaluate): from now on, every rendered frame's time and the avatar's
// mouth opening (window.__mouth).
export function recordMouth() {
  const d = window.__avatar.driver;
  d.recordFrames = true;
  window.__mouth = [];
  const tick = () => { window.__mouth.push([performance.now(), d.visemeLevel()]); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}

// Runs in the page (page.evaluate, playwright's or puppeteer's): what the page logged in
// measurement mode (?measure=1) — transcript, chunks as scheduled (with TalkingHead's text-only
// timing of the same words, a baseline), corrections, frames, mouth levels — and the bot's voice
// as the page heard it, base64 float32.
export function sessionDump() {
  const { conversation: c, driver: d } = window.__avatar;
  const cap = c.log.capture;
  const n = cap ? cap.blocks.reduce((a, b) => a + b.samples.length, 0) : 0;
  const pcm = new Float32Array(n);
  const blockTimes = [];
  let at = 0;
  for (const b of cap?.blocks ?? []) { pcm.set(b.samples, at); blockTimes.push([at, b.t]); at += b.samples.length; }
  let bin = "";
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  const textChunks = c.log.chunks.map((x) => ({
    ...x,
    // TalkingHead's text-only lip-sync of the same words (a baseline): word starts, ms
    textOnly: (() => {
      const per = x.msg.words.map((w) => d.textLipSync(w));
      const len = per.map((p) => (p.visemes.length ? p.times.at(-1) + p.durations.at(-1) : 0));
      const total = len.reduce((a, b) => a + b, 0) || 1;
      let t = 0;
      return len.map((l) => { const s = t; t += (l / total) * x.msg.duration_ms; return s; });
    })(),
  }));
  return {
    snapshot: c.snapshot(), chunks: textChunks, stops: c.log.stops, aligns: c.log.aligns, stretches: c.log.stretches, frames: d.frames, mouth: window.__mouth,
    sampleRate: cap?.sampleRate ?? 0, blockTimes, pcm: btoa(bin), timeOrigin: performance.timeOrigin,
  };
}

// Waits until the avatar has spoken and then been quiet for `quietMs` (the reply heard and its
// mouth shapes played), at most `maxMs`; returns how long it waited, ms, or null if the voice
// never went quiet for that long (the caller's checks then say what was heard). A fixed wait
// cut a slow machine's longer replies short. Works with playwright's and puppeteer's pages.
export async function untilSpoken(page, { quietMs = 2000, maxMs = 60_000 } = {}) {
  const began = Date.now();
  let spoke = false;
  let lastSpeaking = began;
  while (Date.now() - began < maxMs) {
    const speaking = await page.evaluate(() => window.__avatar.conversation.snapshot().avatarState === "speaking");
    if (speaking) { spoke = true; lastSpeaking = Date.now(); }
    if (spoke && Date.now() - lastSpeaking >= quietMs) return Date.now() - began;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

// A browser script's conversation: `body()` runs it and returns its page, whose conversation is
// then stopped; whatever happens, `result` (with the error, if any) goes to OUT_DIR/session.json
// and the browser is closed. Works with playwright's and puppeteer's pages alike.
export async function recordSession(browser, outDir, result, mark, body) {
  try {
    const page = await body();
    await page.click('[data-testid="stop"]');
    await page.waitForSelector('[data-testid="start"]', { timeout: 10_000 });
    mark("stopped");
  } catch (e) {
    result.error = String(e?.stack ?? e);
    // a script call the page never answered (puppeteer's protocol timeout): what its threads do
    if (/timed out/.test(result.error) && typeof browser.process === "function") {
      result.threads ??= threadsOf(browser.process()?.pid);
    }
  } finally {
    await writeFile(`${outDir}/session.json`, JSON.stringify(result));
    await browser.close();
  }
}

// sessionDump() from the page into OUT_DIR: capture.f32 (the heard voice) and the rest returned.
export async function saveSession(page, outDir) {
  const dump = await page.evaluate(sessionDump);
  await writeFile(`${outDir}/capture.f32`, Buffer.from(dump.pcm, "base64"));
  delete dump.pcm;
  return dump;
}
