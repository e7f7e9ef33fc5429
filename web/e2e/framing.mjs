// How the avatar is framed at desktop and phone sizes: where its eyes and shoulder joints show in
// its view (fractions of the view, through the camera that renders them), with a screenshot of
// each page. Usage: node e2e/framing.mjs BASE_URL OUT_DIR  (prints JSON; tests/test_web_e2e.py)
import { writeFile } from "node:fs/promises";
import { launchChromium, waitForAvatar } from "./browser.mjs";

const [base, outDir] = process.argv.slice(2);
const sizes = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true },
};
const result = {};
const browser = await launchChromium();
try {
  for (const [name, options] of Object.entries(sizes)) {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    await page.goto(base);
    await waitForAvatar(page);
    await page.waitForTimeout(4000); // the camera eases to its place, the pose settles
    const view = await page.locator('[data-testid="avatar"]').boundingBox();
    result[name] = { ...(await page.evaluate(() => window.__avatar.driver.inFrame())), view };
    await writeFile(`${outDir}/framing-${name}.png`, await page.screenshot());
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
