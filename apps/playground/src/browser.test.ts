/**
 * The page in a real browser: Debian's Chromium driven by playwright-core (no browser download). With CI=true a
 * missing Chromium fails the run; elsewhere this file skips and says what to install.
 */
import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startPlayground, type Playground } from './playground.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const INSTALL = 'apt-get install -y chromium';
/** `UPDATE_SCREENSHOT=1` refreshes the README's picture; other runs write theirs to a temporary folder. */
const README_SCREENSHOT = fileURLToPath(new URL('../docs/screenshot.png', import.meta.url));

if (!existsSync(CHROMIUM) && process.env.CI === 'true') {
  it('needs Chromium on CI', () => {
    throw new Error(`Chromium is not at ${CHROMIUM}: ${INSTALL} (or set CHROMIUM_PATH).`);
  });
}

(existsSync(CHROMIUM) ? describe : describe.skip)(`the page in Chromium at ${CHROMIUM} (if missing: ${INSTALL})`, () => {
  let playground: Playground;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    [playground, browser] = await Promise.all([startPlayground({ port: 0 }), chromium.launch({ executablePath: CHROMIUM })]);
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(playground.url);
    await page.waitForSelector('body[data-ready]');
  });
  afterAll(async () => {
    await browser?.close();
    await playground?.close();
  });
  afterEach(() => expect(pageErrors).toEqual([]));

  // Waits go through locators: the page's Content-Security-Policy forbids the eval that waitForFunction needs.
  const galleryEntries = () => page.locator('#gallery .entry');
  const waitForGallery = (entries: number) => galleryEntries().nth(entries - 1).waitFor({ timeout: 15_000 });

  it('builds the form from the schemas: schedulers, models and every callback with its options', async () => {
    expect(await page.locator('select[name=scheduler] option').allTextContents()).toEqual([
      "the model's",
      ...['pndm', 'ddim', 'euler', 'euler-karras', 'euler-ancestral', 'dpmpp-2m', 'dpmpp-2m-karras', 'lms'],
    ]);
    expect(await page.locator('select[name=model] option').allTextContents()).toEqual(['tiny']);
    expect(await page.locator('fieldset.callback legend').allTextContents()).toEqual([
      'cfg-cutoff',
      'guidance-interval',
      'interrupt',
      'ipadapter',
      'ipadapter-schedule',
      'preview',
    ]);
    // The preview callback's enum option with its default, and its description as a hint.
    await page.check('input[name=callback-preview]');
    expect(await page.inputValue('#callback-preview-method')).toBe('linear');
    expect(await page.locator('label[for=callback-preview-method] .hint').textContent()).toMatch(/latent-to-RGB factors/);
    await page.uncheck('input[name=callback-preview]');
  });

  it('generates: previews arrive step by step, then the final picture joins the gallery', async () => {
    await page.fill('textarea[name=prompt]', 'a large yellow star in the center on a purple background');
    await page.fill('input[name=seed]', '3');
    await page.fill('input[name=numInferenceSteps]', '20');
    // Count the preview pictures the view shows while the generation runs.
    await page.evaluate(`
      const view = document.getElementById('view');
      window.previewsSeen = new Set();
      new MutationObserver(() => view.src.startsWith('data:image/png') && window.previewsSeen.add(view.src))
        .observe(view, { attributes: true, attributeFilter: ['src'] });
    `);
    await page.click('#generate');
    await waitForGallery(1);
    expect(await page.evaluate('window.previewsSeen.size')).toBeGreaterThanOrEqual(10);
    expect(await page.textContent('#status')).toBe('Done.');
    expect(await page.evaluate("[document.getElementById('progress').value, document.getElementById('progress').max]")).toEqual([20, 20]);
    const view = await page.evaluate("[document.getElementById('view').src.slice(0, 5), document.getElementById('view').naturalWidth]");
    expect(view).toEqual(['blob:', 64]);
    expect(await galleryEntries().first().locator('.settings').textContent()).toBe('seed 3 · 20 steps · guidance 7.5 · tiny');
  });

  it('Stop halfway keeps the partial picture', async () => {
    await page.fill('input[name=numInferenceSteps]', '500');
    await page.check('input[name=callback-cfg-cutoff]');
    await page.fill('#callback-cfg-cutoff-cutoffStepRatio', '0.5');
    await page.click('#generate');
    await page.locator('#status', { hasText: /^Step ([1-9]\d|\d{3}) of/ }).waitFor();
    await page.click('#stop');
    await waitForGallery(2);
    const stoppedAfter = Number(/Stopped after step (\d+)/.exec((await page.textContent('#status')) ?? '')?.[1]);
    expect(stoppedAfter).toBeGreaterThanOrEqual(10);
    expect(stoppedAfter).toBeLessThan(500);
    const newest = galleryEntries().first();
    expect(await newest.locator('.badge').textContent()).toBe(`stopped after step ${stoppedAfter}`);
    expect(await newest.locator('.settings').textContent()).toBe('seed 3 · 500 steps · guidance 7.5 · tiny · cfg-cutoff {"cutoffStepRatio":0.5}');
    expect(await newest.locator('img').evaluate((image) => (image as unknown as { naturalWidth: number }).naturalWidth)).toBe(64);
  });

  it('Reuse settings fills the form with an entry’s request', async () => {
    await galleryEntries().nth(1).locator('.reuse').click();
    expect(await page.inputValue('input[name=numInferenceSteps]')).toBe('20');
    expect(await page.isChecked('input[name=callback-cfg-cutoff]')).toBe(false);
    await galleryEntries().first().locator('.reuse').click();
    expect(await page.inputValue('input[name=numInferenceSteps]')).toBe('500');
    expect(await page.isChecked('input[name=callback-cfg-cutoff]')).toBe(true);
    expect(await page.inputValue('#callback-cfg-cutoff-cutoffStepRatio')).toBe('0.5');
  });

  it('shows a refused request next to the field it names', async () => {
    // The browser checks the limits the schema gives (steps ≤ 1000, …); rules between options only the server knows.
    await page.fill('#callback-cfg-cutoff-cutoffStepIndex', '3');
    await page.click('#generate');
    await page.locator('#status.error').waitFor();
    expect(await page.textContent('#status')).toMatch(/callbacks\.0: .*cutoffStepRatio/);
    expect(await page.getAttribute('fieldset[data-callback=cfg-cutoff]', 'class')).toBe('callback invalid');
    await page.fill('#callback-cfg-cutoff-cutoffStepIndex', '');
  });

  it('takes a screenshot of the page', async () => {
    await page.fill('input[name=numInferenceSteps]', '25');
    await page.click('#generate');
    await waitForGallery(3);
    const path = process.env.UPDATE_SCREENSHOT ? README_SCREENSHOT : join(await mkdtemp(join(tmpdir(), 'playground-')), 'screenshot.png');
    const picture = await page.screenshot({ path, fullPage: true });
    expect(picture.subarray(1, 4).toString()).toBe('PNG');
  });
});
