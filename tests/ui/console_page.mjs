// Loads the console in Debian's Chromium through playwright-core, waits until the
// page shows every expected string (the page renders from server-sent events), saves
// a screenshot, and prints the page's text as JSON for tests/test_console.py to check.
//
// Usage: node console_page.mjs URL SCREENSHOT USER_DATA_DIR EXPECTED_JSON_ARRAY
import { chromium } from "playwright-core";

const [url, screenshot, userDataDir, expectedJson] = process.argv.slice(2);
const expected = JSON.parse(expectedJson);

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 1000 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let status = 1;
try {
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(url, { waitUntil: "load" });
  let text = "";
  let missing = expected;
  try {
    await page.waitForFunction(
      (want) => want.every((w) => document.body.innerText.includes(w)),
      expected,
      { timeout: 20000, polling: 100 },
    );
  } catch (e) {
    // Reported below through `missing`; the test prints the page text.
  }
  text = await page.evaluate(() => document.body.innerText);
  missing = expected.filter((w) => !text.includes(w));
  const live = await page.evaluate(() => document.getElementById("live").textContent);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ text, missing, live, consoleErrors }));
  status = 0;
} finally {
  await context.close();
}
process.exit(status);
