// End-to-end tests of the web page in headless Chromium: the page must give the same answer
// and confidence as `relvqa ask --json`, and must render model output as text.
//
// Needs `make web` (dist/web) and `cargo build --release` (target/release/relvqa) first;
// `make e2e` does both. Set RELVQA_BIN / RELVQA_WEB_ROOT to use other locations.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || join(REPO, 'target');
const BIN = process.env.RELVQA_BIN || join(TARGET, 'release', 'relvqa');
const ROOT = process.env.RELVQA_WEB_ROOT || join(REPO, 'dist', 'web');
const LOAD_TIMEOUT_MS = 120_000;

let browser;
let server;
let url;
let userDataDir;
let dataDir;
let samples;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-data-'));
  execFileSync(BIN, ['dataset', '--split', 'test', '--limit', '2', '--out', dataDir], { cwd: REPO });
  samples = readFileSync(join(dataDir, 'questions.jsonl'), 'utf8')
    .trim().split('\n').map((l) => JSON.parse(l));
  ({ server, url } = await serve(ROOT));
  userDataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-chromium-'));
  // launchPersistentContext is how Playwright takes a --user-data-dir.
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--enable-unsafe-webgpu',
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
  for (const d of [userDataDir, dataDir]) if (d) rmSync(d, { recursive: true, force: true });
});

/** Open the page, wait for the model, ask `question` about `image` at `risk`; the result section. */
async function askOnPage(page, image, question, risk = '0.05') {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS })
    .catch(async (e) => {
      throw new Error(`model never became ready: ${await page.textContent('#error')} ${errors} ${e}`);
    });
  await page.setInputFiles('#image-input', image);
  await page.fill('#question', question);
  await page.selectOption('#risk', risk);
  await page.click('#ask');
  await Promise.race([
    page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS }),
    page.waitForSelector('#error:not([hidden])', { timeout: LOAD_TIMEOUT_MS }).then(async () => {
      throw new Error(`the page showed an error: ${await page.textContent('#error')}`);
    }),
  ]);
  assert.deepEqual(errors, []);
}

test('the page answers like `relvqa ask --json`', async () => {
  for (const s of samples) {
    const image = join(dataDir, s.image);
    const cli = JSON.parse(execFileSync(BIN, [
      'ask', '--json', '--model', join(REPO, 'models', 'default'), '--image', image,
      '--question', s.question, '--risk', '0.05',
    ], { cwd: REPO, encoding: 'utf8' }));
    const page = await browser.newPage();
    await askOnPage(page, image, s.question);
    assert.equal(await page.textContent('#answer'), cli.answer, `answer to "${s.question}"`);
    const shown = await page.getAttribute('#result', 'data-confidence');
    // Native and wasm sum floats in different orders; the shown value is rounded to 3 places.
    assert.ok(Math.abs(Number(shown) - cli.confidence) < 1e-4,
      `confidence ${shown} vs ${cli.confidence}`);
    assert.equal(await page.textContent('#confidence'), cli.confidence.toFixed(3));
    assert.equal(await page.textContent('#confidence-source'), cli.confidence_source);
    assert.equal(await page.getAttribute('#result', 'data-abstain'), String(cli.abstain));
    assert.equal(await page.textContent('#reason'), cli.reason);
    assert.equal(await page.textContent('#backend'), 'cpu');
    await page.close();
  }
});

test('model output is rendered as text, never as HTML', async () => {
  const s = samples[0];
  const cli = JSON.parse(execFileSync(BIN, [
    'ask', '--json', '--model', join(REPO, 'models', 'default'), '--image', join(dataDir, s.image),
    '--question', s.question,
  ], { cwd: REPO, encoding: 'utf8' }));
  // Rename the answer's word in the served tokenizer to markup: the model then "says" HTML.
  const word = cli.answer.split(' ')[0];
  assert.ok(!s.question.split(' ').includes(word), 'pick a sample whose answer is not in the question');
  const payload = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
  const tok = JSON.parse(readFileSync(join(ROOT, 'models', 'default', 'tokenizer.json'), 'utf8'));
  const vocab = tok.model.vocab;
  assert.ok(word in vocab, `answer word ${word} is in the vocabulary`);
  vocab[payload] = vocab[word];
  delete vocab[word];
  const page = await browser.newPage();
  await page.route('**/models/default/tokenizer.json', (route) => route.fulfill({
    status: 200, contentType: 'application/json', body: JSON.stringify(tok),
  }));
  await askOnPage(page, join(dataDir, s.image), s.question);
  const answer = await page.textContent('#answer');
  assert.ok(answer.includes(payload), `answer shown as text: ${answer}`);
  assert.equal(await page.locator('#result img, #result b').count(), 0, 'no element was injected');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await page.close();
});

test('a broken image shows the crate\'s typed error, and the page recovers', async () => {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS });
  await page.setInputFiles('#image-input', {
    name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not a png at all'),
  });
  await page.fill('#question', samples[0].question);
  await page.click('#ask');
  await page.waitForSelector('#error:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  assert.match(await page.textContent('#error'), /^image: /);
  // The worker survives: a good image is answered afterwards.
  await page.setInputFiles('#image-input', join(dataDir, samples[0].image));
  await page.click('#ask');
  await page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  await page.close();
});
