// The page of a running stack: it loads from that host alone, shows its avatar, and connects
// (with ACCESS_KEY when the stack asks for one; "" for a development stack). With a WAV as the
// microphone it then waits up to NOTICE_SECONDS for a notice and records it with the bot's words.
// Prints a JSON object (foreign requests, console errors, the avatar screenshot's pixel
// statistics, the connection state, notices) for tests/test_compose_up.py and test_web_e2e.py.
// Usage: node e2e/page.mjs BASE_URL ACCESS_KEY OUT.png [WAV NOTICE_SECONDS]
import { writeFile } from "node:fs/promises";
import { launchChromium, pixelStats, waitForAvatar, watchPage } from "./browser.mjs";

const [base, key, out, wav, noticeSeconds = "90"] = process.argv.slice(2);
const origin = new URL(base);
const browser = await launchChromium([
  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
  ...(wav ? [`--use-file-for-fake-audio-capture=${wav}`] : []),
]);
const result = { notices: [] };
try {
  const page = await (await browser.newContext({ viewport: { width: 420, height: 860 } })).newPage();
  watchPage(page, origin, result);
  await page.goto(base);
  await waitForAvatar(page);
  await page.waitForTimeout(3000); // the pose and the rendering resolution settle
  const shot = await page.locator('[data-testid="avatar"]').screenshot();
  await writeFile(out, shot);
  result.screenshot = await pixelStats(shot);
  await page.click('[data-testid="start"]');
  if (key) { // refused without the key: the page asks for it
    await page.fill('input[type="password"]', key);
    await page.click('[data-testid="start"]');
  }
  await page.waitForSelector('[data-testid="connection"][data-state="connected"]', { timeout: 60_000 });
  result.connected = true;
  if (wav) {
    const notice = page.locator('[data-testid="notice"]');
    await notice.waitFor({ timeout: Number(noticeSeconds) * 1000 });
    result.notices.push(await notice.textContent());
    // what the bot said meanwhile (its words come with its timing messages)
    await page.locator('[data-testid="bot-word"]').first().waitFor({ timeout: 60_000 });
    await page.waitForTimeout(2000);
    result.botWords = await page.locator('[data-testid="bot-word"]').allTextContents();
  }
} catch (e) {
  result.error = String(e.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
