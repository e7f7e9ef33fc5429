// The page in Firefox ESR (Debian's firefox-esr, no browser download), driven by puppeteer-core
// over WebDriver BiDi: it loads from this host alone, renders the avatar, connects, and answers a
// typed question aloud with the mouth moving. Firefox's fake media stands in for the microphone
// (a tone, not speech), muted before typing. Firefox runs no Web Audio without an audio output
// device (Chromium fakes one): give it one, e.g. a PulseAudio null sink (the test does).
// tests/test_web_e2e.py reads what it writes:
//   session.json   what the page showed and logged (as e2e/session.mjs writes it)
//   capture.f32    the bot's voice as the page heard it
//   avatar-firefox.png
// It runs with a window, on a virtual display: headless Firefox finds no GL driver for WebGL on a
// machine without a GPU, while a windowed one uses Mesa's software renderer (llvmpipe).
// Usage: xvfb-run -a node e2e/firefox.mjs BASE_URL OUT_DIR
import { mkdir, writeFile } from "node:fs/promises";
import { connectionShown, launchFirefox, pixelStats, recordMouth, recordSession, saveSession, threadsOf, untilSpoken, watchPage } from "./browser.mjs";

const [base, outDir] = process.argv.slice(2);
const TYPED = ["What is the capital of France?", "Tell me a short story about a friendly robot."];
const origin = new URL(base);
await mkdir(outDir, { recursive: true });

// Firefox's page sometimes stops for good (its main thread asleep on a lock) just as the
// conversation's audio starts: 11 of 200 connections through LiveKit and 7 of 74 through
// SmallWebRTC in loops here (e2e/firefox-connects.mjs), wherever the first synchronous Web
// Audio call lands (moving it moved the hang). It is a deadlock inside Firefox's audio stack, not
// the page (eu-stack, 2026-12-06): in the parent process, Firefox's PulseAudio thread holds
// PulseAudio's lock inside a stream callback that waits on Firefox's audio RPC, whose server
// thread waits for that lock, and the page's main thread waits on both. Firefox's ALSA backend
// (through PulseAudio's ALSA plugin) did not hang in 60 connections, but its pages heard nothing
// of the bot's track, so the test keeps Firefox's default. A page that never connects, or that
// stops answering puppeteer's calls once connected (the same hang a moment later: one CI run,
// its page's main thread asleep on a lock and the parent's audio RPC thread waiting on another,
// 180 s after "connected"), gets up to two more tries, each in a fresh Firefox, and what the
// earlier ones showed is kept (result.earlierTries). A bot that does not answer is no hang: its
// wait ends in puppeteer's own timeout, not a protocol one, and is not tried again.
const MAX_TRIES = 3;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hung = (result) => result.notConnected || /ProtocolError: \S+ timed out/.test(result.error ?? "");
const earlierTries = [];
for (let attempt = 1; attempt <= MAX_TRIES; attempt++) {
  const result = await converse(earlierTries); // session.json: the last try's
  if (!hung(result) || attempt === MAX_TRIES) break;
  earlierTries.push({ error: result.error, notConnected: result.notConnected, threads: result.threads, steps: result.steps });
  console.log("[firefox] the page stopped (Firefox's audio deadlock): trying again in a fresh Firefox");
}

async function converse(earlierTries) {
  const browser = await launchFirefox(); // windowed: see above
  const result = { browser: await browser.version(), foreignRequests: [], consoleErrors: [], steps: {}, earlierTries };
  const mark = (name) => { result.steps[name] = Date.now(); console.log(`[firefox] ${name}`); };
  await recordSession(browser, outDir, result, mark, async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 800 });
    // Nothing may leave the operator's network: only this host (page, API, LiveKit) is allowed.
    watchPage(page, origin, result); // puppeteer's page has the same events as playwright's
    // the page's other console lines too (livekit-client warns there when it retries), the last 80
    result.console = [];
    page.on("console", (m) => { if (m.type() !== "error") result.console = [...result.console.slice(-79), `${m.type()}: ${m.text()}`]; });

    await page.goto(new URL("/?measure=1", base).href);
    await page.waitForFunction(() => window.__avatar?.driver?.head?.avatar, { timeout: 120_000 });
    await page.waitForSelector('[data-testid="avatar-progress"]', { hidden: true, timeout: 120_000 });
    await sleep(4000); // the pose, the camera and the rendering resolution settle
    mark("avatar-shown");
    const shot = await (await page.$('[data-testid="avatar"]')).screenshot();
    await writeFile(`${outDir}/avatar-firefox.png`, shot);
    result.screenshot = await pixelStats(shot);

    page.on("pageerror", (e) => result.consoleErrors.push(`uncaught: ${e?.message ?? e}`));
    await page.click('[data-testid="start"]');
    try {
      await page.waitForSelector('[data-testid="connection"][data-state="connected"]', { timeout: 60_000 });
    } catch (e) {
      // what the page showed instead (an intermittent failure over SmallWebRTC: tests/test_web_e2e.py),
      // and, the page having once left this question unanswered for minutes, what Firefox was doing
      result.threads = threadsOf(browser.process()?.pid);
      result.notConnected = await Promise.race([
        page.evaluate(connectionShown),
        sleep(20_000).then(() => "the page did not answer within 20 s"),
      ]);
      throw e;
    }
    mark("connected");
    await page.evaluate(recordMouth);
    await page.click('[data-testid="mute"]'); // the fake microphone's tone is not a question
    await page.waitForSelector('[data-testid="chat-text"]:not([disabled])', { timeout: 10_000 });
    // a question with a known answer, then one with a longer answer (more words to measure)
    result.sentAt = [];
    for (const [i, text] of TYPED.entries()) {
      await page.type('[data-testid="chat-text"]', text);
      result.sentAt.push(await page.evaluate(() => performance.now()));
      await page.keyboard.press("Enter");
      await page.waitForFunction((n) => {
        const lines = window.__avatar.conversation.snapshot().lines;
        return lines.length >= n && lines.at(-1).role === "bot" && lines.at(-1).words.length >= 3;
      }, { timeout: 120_000, polling: 100 }, 2 * (i + 1));
      result.spokenFor = [...(result.spokenFor ?? []), await untilSpoken(page)];
      mark(`answered-${i + 1}`);
    }
    Object.assign(result, await saveSession(page, outDir));
    return page;
  });
  return result;
}
