// How often Firefox's page hangs as a conversation starts (firefox.mjs's note): N times, a page
// shows the avatar, connects, and ends the conversation, in one Firefox like firefox.mjs's; each
// failure is printed with the page's state, its last console lines and Firefox's threads.
// Needs a running bot (python -m stack.app, DEV_MODE=true) and an audio output for Firefox (a
// PulseAudio null sink, as tests/test_web_e2e.py starts one).
// Usage: xvfb-run -a node e2e/firefox-connects.mjs BASE_URL N
import { connectionShown, launchFirefox, threadsOf } from "./browser.mjs";
const [base, n] = process.argv.slice(2);
const browser = await launchFirefox();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = [];
for (let i = 0; i < Number(n); i++) {
  const page = await browser.newPage();
  const t0 = Date.now();
  let res = "ok";
  let lines = [];
  page.on("console", (m) => { lines = [...lines.slice(-40), `${Date.now() - t0} ${m.type()}: ${m.text()}`]; });
  page.on("pageerror", (e) => { lines.push(`pageerror ${e}`); });
  try {
    await page.goto(new URL("/?measure=1", base).href);
    await page.waitForFunction(() => window.__avatar?.driver?.head?.avatar, { timeout: 120_000 });
    await page.waitForSelector('[data-testid="avatar-progress"]', { hidden: true, timeout: 120_000 });
    await sleep(1000);
    await page.click('[data-testid="start"]');
    await page.waitForSelector('[data-testid="connection"][data-state="connected"]', { timeout: 40_000 });
    await page.click('[data-testid="stop"]');
    await page.waitForSelector('[data-testid="start"]', { timeout: 10_000 });
  } catch (e) {
    res = String(e).slice(0, 200);
    const info = await Promise.race([
      page.evaluate(connectionShown),
      sleep(15_000).then(() => "no answer in 15 s")]);
    if (info?.state === "connected") {
      const stopped = await Promise.race([page.evaluate(() => window.__avatar.conversation.stop().then(() => "stop() ok", (e) => `stop() threw ${e}`)), sleep(10_000).then(() => "stop() hung")]);
      res += " EVAL " + stopped;
    }
    res += " " + JSON.stringify(info) + "\n" + lines.join("\n") + "\n" + threadsOf(browser.process()?.pid).join("\n");
  }
  console.log(`[${i}] ${Date.now() - t0} ms ${res}`);
  out.push(res);
  await Promise.race([page.close(), sleep(10_000)]);
}
console.log("failures", out.filter((r) => r !== "ok").length, "of", out.length);
await browser.close();
