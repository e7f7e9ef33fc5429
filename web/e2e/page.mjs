// The page of a running stack that asks for an access key (the Compose stack): it loads from that
// host alone, shows its avatar, and connects with the key. Prints a JSON object (foreign requests,
// console errors, the avatar screenshot's pixel statistics, the connection state) for
// tests/test_compose_up.py. Usage: node e2e/page.mjs BASE_URL ACCESS_KEY OUT.png
import { writeFile } from "node:fs/promises";
import { launchChromium, pixelStats, waitForAvatar, watchPage } from "./browser.mjs";

const [base, key, out] = process.argv.slice(2);
const origin = new URL(base);
const browser = await launchChromium(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]);
const result = {};
try {
  const page = await (await browser.newContext({ viewport: { width: 420, height: 860 } })).newPage();
  watchPage(page, origin, result);
  await page.goto(base);
  await waitForAvatar(page);
  await page.waitForTimeout(3000); // the pose and the rendering resolution settle
  const shot = await page.locator('[data-testid="avatar"]').screenshot();
  await writeFile(out, shot);
  result.screenshot = await page.evaluate(pixelStats, shot.toString("base64"));
  await page.click('[data-testid="start"]'); // refused without the key: the page asks for it
  await page.fill('input[type="password"]', key);
  await page.click('[data-testid="start"]');
  await page.waitForSelector('[data-testid="connection"][data-state="connected"]', { timeout: 60_000 });
  result.connected = true;
} catch (e) {
  result.error = String(e.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
