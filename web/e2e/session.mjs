// One real conversation in headless Chromium (Debian's, driven by playwright-core), with a WAV
// file as the microphone. tests/test_web_e2e.py starts the stack, runs this, and checks what it
// wrote to OUT_DIR:
//   session.json   what the page showed and logged (transcript, chunks as scheduled, frames, …)
//   capture.f32    the bot's voice as the page heard it (float32 mono at session.json.sampleRate)
//   avatar.png     a screenshot of the avatar
// Usage: node e2e/session.mjs BASE_URL WAV OUT_DIR [TALK_SECONDS]
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { launchChromium, pixelStats, recordMouth, recordSession, saveSession, untilSpoken, waitForAvatar, watchPage } from "./browser.mjs";

const [base, wav, outDir, talkSeconds = "60"] = process.argv.slice(2);
// After a story cut short by the person, the test profile's 135M model may take a bare question
// as a cue to go on with the story (two CI runs, with and without "Different question:"): the
// LiveKit session, whose history has no cut-short story, checks the answer; the SmallWebRTC one,
// whose has, checks only that it was answered aloud in the picked voice (tests/test_web_e2e.py).
const TYPED = "Different question: what is the capital of France?";
const origin = new URL(base);
await mkdir(outDir, { recursive: true });

const browser = await launchChromium([
  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
  `--use-file-for-fake-audio-capture=${wav}`, "--autoplay-policy=no-user-gesture-required",
]);
const result = { foreignRequests: [], consoleErrors: [], steps: {} };
const mark = (name) => { result.steps[name] = Date.now(); console.log(`[e2e] ${name}`); };
await recordSession(browser, outDir, result, mark, async () => {
  const context = await browser.newContext({ viewport: { width: 420, height: 860 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  // Nothing may leave the operator's network: only this host (page, API, LiveKit) is allowed.
  watchPage(page, origin, result);

  await page.goto(new URL("/?measure=1", base).href);
  await waitForAvatar(page);
  await page.waitForTimeout(5000); // frames to settle the pose and the rendering resolution
  mark("avatar-shown");
  const shot = await page.locator('[data-testid="avatar"]').screenshot();
  await writeFile(`${outDir}/avatar.png`, shot);
  result.screenshot = await pixelStats(shot);
  result.avatars = await page.locator('[data-testid="avatar-choice"] option').allTextContents();

  // A person's own GLB file, loaded from disk into the page.
  if (process.env.CUSTOM_GLB) {
    await page.setInputFiles('input[type="file"]', process.env.CUSTOM_GLB);
    await page.waitForFunction(() => window.__avatar.driver.head.avatar?.url?.startsWith("blob:"), null, { timeout: 60_000 });
    await page.waitForSelector('[data-testid="avatar-progress"]', { state: "detached", timeout: 120_000 });
    await page.waitForTimeout(3000);
    const custom = await page.locator('[data-testid="avatar"]').screenshot();
    await writeFile(`${outDir}/avatar-custom.png`, custom);
    result.customScreenshot = await pixelStats(custom);
    mark("custom-avatar-shown");
  }

  await page.click('[data-testid="start"]');
  await page.waitForSelector('[data-testid="connection"][data-state="connected"]', { timeout: 60_000 });
  mark("connected");

  // While the conversation runs, sample the avatar's mouth every frame.
  await page.evaluate(recordMouth);
  await page.waitForSelector('[data-role="user"]', { timeout: 90_000 });
  mark("user-transcript");
  // a reply: its words with timings, or (a bot that sends no timing messages) its response time
  await page.waitForFunction(() => document.querySelector('[data-testid="bot-word"]')
    || window.__avatar.conversation.snapshot().latencies.length, null, { timeout: 90_000 });
  mark("bot-reply");
  await page.waitForTimeout(Number(talkSeconds) * 1000);
  mark("talked");

  const transcriptBeforeMute = await userLines(page);
  await page.click('[data-testid="mute"]');
  mark("muted");
  await page.waitForTimeout(5_000); // what was already said may still be transcribed
  const afterMuteStart = await userLines(page);
  await page.waitForTimeout(25_000); // longer than one loop of the microphone file
  const afterMute = await userLines(page);
  mark("mute-checked");

  // Typing instead of speaking, with the microphone still muted: an overlong message is refused
  // in plain words and stays in the box; a question is answered aloud. (TYPED_CHAT=0: a bot that
  // takes no typed messages, Pipecat's stock services in the benchmark.)
  if (process.env.TYPED_CHAT !== "0") {
    const maxChars = JSON.parse(await readFile(new URL("../../docs/protocol.schema.json", import.meta.url), "utf8"))["x-client"].chatMaxChars;
    await page.fill('[data-testid="chat-text"]', "a".repeat(maxChars + 1));
    const linesBefore = await page.evaluate(() => window.__avatar.conversation.snapshot().lines.length);
    await page.click('[data-testid="chat-send"]');
    await page.waitForSelector('[data-testid="chat-error"]', { timeout: 10_000 });
    const typed = {
      text: TYPED,
      maxChars,
      error: await page.locator('[data-testid="chat-error"]').textContent(),
      keptChars: (await page.inputValue('[data-testid="chat-text"]')).length,
      linesBefore,
      linesAfterRefusal: await page.evaluate(() => window.__avatar.conversation.snapshot().lines.length),
    };
    // a voice picked during the conversation: the typed question's reply speaks with it
    typed.voices = await page.locator('[data-testid="voice-choice"] option').allTextContents();
    const currentVoice = await page.inputValue('[data-testid="voice-choice"]');
    typed.voice = typed.voices.find((v) => v !== currentVoice) ?? null;
    if (typed.voice) await page.selectOption('[data-testid="voice-choice"]', typed.voice);
    await page.fill('[data-testid="chat-text"]', TYPED);
    typed.sentAt = await page.evaluate(() => performance.now());
    await page.press('[data-testid="chat-text"]', "Enter");
    typed.scrollAtSend = await page.evaluate(() => window.scrollY);
    await page.waitForFunction((n) => {
      const lines = window.__avatar.conversation.snapshot().lines;
      return lines.length > n + 1 && lines.at(-1).role === "bot" && lines.at(-1).words.length >= 3;
    }, typed.linesAfterRefusal, { timeout: 90_000, polling: 100 });
    typed.spokenFor = await untilSpoken(page);
    typed.boxAfterSend = await page.inputValue('[data-testid="chat-text"]');
    typed.errorAfterSend = await page.locator('[data-testid="chat-error"]').count();
    result.typed = typed;
    mark("typed");
  }

  const dump = await saveSession(page, outDir);
  Object.assign(result, dump, { transcriptBeforeMute, afterMuteStart, afterMute });
  return page;
});

async function userLines(page) {
  return page.locator('[data-role="user"]').allTextContents();
}


