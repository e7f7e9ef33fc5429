// The errors a person can meet, in real Chromium against a server that requires an access key:
// no key, a wrong key, the microphone denied, every avatar busy, the server unreachable. Prints a JSON object with
// the message the page showed for each (tests/test_web_e2e.py checks them).
// Usage: node e2e/errors.mjs BASE_URL ACCESS_KEY
import { launchChromium } from "./browser.mjs";

const [base, key] = process.argv.slice(2);
// No --use-fake-ui-for-media-stream: the permission request is refused, as when a person says no.
const browser = await launchChromium(["--use-fake-device-for-media-stream"]);
const shown = {};
try {
  const page = await (await browser.newContext({ viewport: { width: 420, height: 860 } })).newPage();
  await page.goto(base);
  await page.waitForFunction(() => window.__avatar?.conversation, null, { timeout: 60_000 });
  let last = null;
  const attempt = async (name) => {
    await page.click('[data-testid="start"]');
    await page.waitForFunction((prev) => {
      const el = document.querySelector('[data-testid="error"]');
      return el && el.textContent !== prev;
    }, last, { timeout: 60_000 });
    last = shown[name] = await page.locator('[data-testid="error"]').textContent();
  };
  await attempt("noKey");
  await page.fill('input[type="password"]', "not-the-key");
  await attempt("wrongKey");
  await page.fill('input[type="password"]', key);
  await attempt("micDenied");
  // The server holds one conversation (MAX_CONVERSATIONS=1): take it, then the page is refused.
  await fetch(new URL("/token", base), {
    method: "POST", body: JSON.stringify({ name: "Other" }),
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
  });
  await attempt("busy");
  await page.route("**/token", (route) => route.abort("connectionrefused"));
  await attempt("unreachable");
} catch (e) {
  shown.error = String(e?.stack ?? e);
} finally {
  console.log(JSON.stringify(shown));
  await browser.close();
}
