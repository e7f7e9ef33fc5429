// The README's screenshot: the page of a running stack, with its default avatar, in headless
// Chromium (desktop size). Usage, with the stack up (docker compose ... up, or scripts/run.sh):
//   node web/e2e/screenshot.mjs http://localhost:8080 docs/screenshot.png
// Use an avatar you may publish (the default mpfb.glb is CC0; the test avatars are not).
import { writeFile } from "node:fs/promises";
import { launchChromium, waitForAvatar } from "./browser.mjs";

const [base, out = "docs/screenshot.png"] = process.argv.slice(2);
if (!base) {
  console.error("usage: node web/e2e/screenshot.mjs BASE_URL [OUT.png]");
  process.exit(2);
}
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(base);
  await waitForAvatar(page);
  await page.waitForTimeout(5000); // the pose and the rendering resolution settle
  await writeFile(out, await page.screenshot());
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}
