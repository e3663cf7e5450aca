// Drives the served web demo in headless Chromium as a user would, and prints what the page computed as
// one JSON line ("RESULT {...}") for tests/test_quickstart.py to compare with the Python runtime.
//
//   node web_demo/test/browser_check.mjs URL SPEC.json OUT_DIR
//
// SPEC.json: {"bundlesDir": DIR, "bundles": [NAME, ...], "screenshot": NAME, "runs": N, "camera": true,
//             "bad": [{"label", "files": [PATH, ...]}, ...]}
// For each served bundle NAME: pick it in the select, load bundles/NAME/golden/image.png through the URL
// form, wait for the result; read the top-5 from the page, the input and output tensors the page made, and
// the output for golden/input.bin. Each "bad" entry is a set of files given to the bundle file picker; the
// page's error message is recorded. Every request the page makes is recorded, so the test can fail on any
// that leaves the server.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [url, specPath, outDir] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, 'utf8'));
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_FLAGS, headless: true,
});
const result = { requests: [], console: [], bundles: {}, bad: {}, camera: null, failure: null };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
  page.on('request', (request) => result.requests.push(request.url()));
  page.on('console', (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => result.console.push(`pageerror: ${error.message}`));
  await page.goto(url);
  result.served = await page.evaluate(() => window.dynzooDemo.ready);
  await page.fill('#runs', String(spec.runs ?? 20));

  // Resolves once the status line is one of `texts`, or an error shows.
  const waitForStatus = (texts) => page.waitForFunction(
    (t) => t.includes(document.getElementById('status').textContent)
      || !document.getElementById('error').hidden, texts, { timeout: 60000 });
  const errorText = () => page.evaluate(() => {
    const box = document.getElementById('error');
    return box.hidden ? null : box.textContent;
  });

  for (const name of spec.bundles) {
    await page.selectOption('#bundle-select', name);
    await waitForStatus([`Bundle ${name} ready.`, `${name}: done.`]); // done: it ran on the previous image
    const loadError = await errorText();
    if (loadError) {
      result.bundles[name] = { error: loadError };
      continue;
    }
    const image = `bundles/${name}/golden/image.png`;
    await page.fill('#image-url', image);
    await page.click('#url-form button[type=submit]');
    await page.waitForFunction(([n, i]) => (window.dynzooDemo.result()?.bundle === n
      && window.dynzooDemo.result().source.endsWith(i)) || !document.getElementById('error').hidden,
    [name, image], { timeout: 60000 });
    const runError = await errorText();
    if (runError) {
      result.bundles[name] = { error: runError };
      continue;
    }
    const shown = await page.$$eval('#top-k tbody tr', (rows) => rows.map((row) => ({
      class: Number(row.dataset.class), label: row.children[1].textContent, text: row.children[2].textContent,
    })));
    const golden = readFileSync(join(spec.bundlesDir, name, 'golden', 'input.bin')).toString('base64');
    const goldenOutput = await page.evaluate((b64) => window.dynzooDemo.runTensor(b64), golden);
    result.bundles[name] = { ...(await page.evaluate(() => window.dynzooDemo.result())), shown, goldenOutput };
    if (name === spec.screenshot) await page.screenshot({ path: join(outDir, 'web_demo.png'), fullPage: true });
  }

  // The camera (Chromium's fake device): a frame classifies through the same path.
  if (spec.camera !== false) await checkCamera();

  for (const bad of spec.bad ?? []) {
    await page.evaluate(() => { document.getElementById('error').hidden = true; });
    await page.setInputFiles('#bundle-files', bad.files);
    await waitForStatus(['Bundle dropped ready.']);
    result.bad[bad.label] = await errorText();
  }

  async function checkCamera() {
    await page.click('#camera-start');
    await page.waitForFunction(() => !document.getElementById('camera-capture').disabled
      || !document.getElementById('error').hidden, null, { timeout: 30000 });
    if (!(await errorText())) {
      await page.click('#camera-capture');
      await page.waitForFunction(() => window.dynzooDemo.result()?.source === 'camera'
        || !document.getElementById('error').hidden, null, { timeout: 60000 });
    }
    result.camera = { error: await errorText(), result: await page.evaluate(() => window.dynzooDemo.result()) };
  }
} catch (error) {
  result.failure = String(error.stack || error); // reported with the console lines, for the test's message
} finally {
  await browser.close();
}
console.log(`RESULT ${JSON.stringify(result)}`);
