// The errors a person can meet, in real Chromium against a server that requires an access key:
// no key, a wrong key, the microphone denied, every avatar busy, the server unreachable, through
// the transport the server announces. Prints a JSON object with the message the page showed for
// each (tests/test_web_e2e.py checks them).
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
  // The server holds one conversation (MAX_CONVERSATIONS=1): someone else takes it (through
  // the server's transport: a token, or an offer made in a second page), then this page is refused.
  const { transport } = await (await fetch(new URL("/config", base))).json();
  const other = await (await browser.newContext()).newPage();
  await other.goto(new URL("/config", base).href);
  // (the refused-microphone attempt's conversation is ending: its place frees within seconds)
  const take = () => other.evaluate(async ([transport, key]) => {
    const auth = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
    if (transport === "livekit") {
      return (await fetch("/token", { method: "POST", body: JSON.stringify({ name: "Other" }), headers: auth })).status;
    }
    const pc = new RTCPeerConnection();
    pc.addTransceiver("audio", { direction: "sendrecv" });
    pc.createDataChannel("chat");
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => { pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve(); setTimeout(resolve, 3000); });
    const r = await fetch("/webrtc/offer", { method: "POST", body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }), headers: auth });
    if (r.ok) await pc.setRemoteDescription(await r.json());
    window.__other = pc; // kept open while this page is refused
    return r.status;
  }, [transport, key]);
  let taken = await take();
  for (let i = 0; i < 30 && taken === 503; i++) {
    await other.waitForTimeout(1000);
    taken = await take();
  }
  if (taken !== 200) throw new Error(`the other conversation was refused: ${taken}`);
  await attempt("busy");
  await page.route(transport === "livekit" ? "**/token" : "**/webrtc/offer", (route) => route.abort("connectionrefused"));
  await attempt("unreachable");
} catch (e) {
  shown.error = String(e?.stack ?? e);
} finally {
  console.log(JSON.stringify(shown));
  await browser.close();
}
