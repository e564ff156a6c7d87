// Qwen2-VL in the page: the page reads the family from config.json's `model_type`, so a
// Qwen2-VL folder (its own processor, M-RoPE, chat template) and a Qwen2-VL package answer
// there like `relvqa ask --json` natively: the same answer, confidence and decision, on the CPU
// and on WebGPU, and text-only generation gives `relvqa generate --json`'s ids. The model is
// the committed random tiny fixture that `relvqa check-reference` checks against transformers.
//
// Needs `make web` and `cargo build --release` first (`make e2e` does both).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || join(REPO, 'target');
const BIN = process.env.RELVQA_BIN || join(TARGET, 'release', 'relvqa');
const ROOT = process.env.RELVQA_WEB_ROOT || join(REPO, 'dist', 'web');
const FIXTURE = join(REPO, 'tests', 'fixtures', 'golden', 'qwen2vl-tiny');
const TIMEOUT_MS = 120_000;
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--enable-unsafe-webgpu',
];
const QUESTION = 'What is in the image?';
const MAX_NEW = 6;

let servers = [];
let browser;
let tmp;
let userDataDir;
let pageUrl;
let modelUrl;

function cli(args) {
  return JSON.parse(execFileSync(BIN, args, { cwd: REPO, encoding: 'utf8' }));
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'relvqa-e2e-qwen-'));
  cpSync(FIXTURE, join(tmp, 'qwen'), { recursive: true });
  // Group 32: the fixture's MLP is 96 wide, which group 64 does not divide.
  execFileSync(BIN, ['quantize', '--model', join(tmp, 'qwen'), '--method', 'hqq', '--bits', '4',
    '--group', '32', '--out', join(tmp, 'qwen-hqq4')], { cwd: REPO, stdio: 'ignore' });
  const web = await serve(ROOT);
  const models = await serve(tmp);
  servers = [web.server, models.server];
  pageUrl = web.url;
  modelUrl = models.url;
  userDataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-chromium-'));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS,
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) s.close();
  for (const d of [tmp, userDataDir]) if (d) rmSync(d, { recursive: true, force: true });
});

/** Open the page on the model at `model` (a URL) with `query`; resolves once it is ready. */
async function open(model, backend, query = '') {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${pageUrl}?backend=${backend}&model=${encodeURIComponent(model)}${query}`);
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: TIMEOUT_MS })
    .catch(async (e) => {
      throw new Error(`model never became ready: ${await page.textContent('#error')} ${errors} ${e}`);
    });
  return { page, errors };
}

/** Ask about the fixture's image; resolves to what the page shows. */
async function ask(page, image, question) {
  await page.evaluate(() => { document.getElementById('result').hidden = true; });
  await page.setInputFiles('#image-input', image);
  await page.fill('#question', question);
  await page.click('#ask');
  await Promise.race([
    page.waitForSelector('#result:not([hidden])', { timeout: TIMEOUT_MS }),
    page.waitForSelector('#error:not([hidden])', { timeout: TIMEOUT_MS }).then(async () => {
      throw new Error(`the page showed an error: ${await page.textContent('#error')}`);
    }),
  ]);
  return {
    answer: await page.textContent('#answer'),
    confidence: Number(await page.getAttribute('#result', 'data-confidence')),
    source: await page.textContent('#confidence-source'),
    abstain: await page.getAttribute('#result', 'data-abstain'),
    reason: await page.textContent('#reason'),
    backend: await page.getAttribute('#backend', 'data-backend'),
  };
}

function assertLikeCli(shown, native, what) {
  assert.equal(shown.answer, native.answer, `answer (${what})`);
  // Native and wasm (and the GPU) sum floats in different orders.
  assert.ok(Math.abs(shown.confidence - native.confidence) < 1e-4,
    `confidence ${shown.confidence} vs ${native.confidence} (${what})`);
  assert.equal(shown.source, native.confidence_source, what);
  assert.equal(shown.abstain, String(native.abstain), what);
  assert.equal(shown.reason, native.reason, what);
}

/** Generate from "Text only"; resolves to the ids and text shown. */
async function generate(page, prompt) {
  await page.click('#text-only summary');
  await page.fill('#text-prompt', prompt);
  await page.fill('#text-max', String(MAX_NEW));
  await page.click('#text-generate');
  await page.waitForSelector('#text-output:not([hidden])', { timeout: TIMEOUT_MS });
  const out = await page.$('#text-output');
  return {
    text: await out.textContent(),
    ids: (await out.getAttribute('data-ids')).split(',').filter(Boolean).map(Number),
  };
}

test('a Qwen2-VL folder answers like `relvqa ask`, on the CPU and on WebGPU', async () => {
  const image = join(FIXTURE, 'image.png');
  const native = cli(['ask', '--json', '--model', join(tmp, 'qwen'), '--image', image,
    '--question', QUESTION]);
  assert.ok(native.answer.length > 0);
  for (const backend of ['cpu', 'webgpu']) {
    const { page, errors } = await open(`${modelUrl}qwen`, backend);
    const shown = await ask(page, image, QUESTION);
    assert.equal(shown.backend, backend);
    assertLikeCli(shown, native, `folder on ${backend}`);
    if (backend === 'cpu') {
      // The language model alone, through Qwen2-VL's chat template.
      const gen = cli(['generate', '--json', '--model', join(tmp, 'qwen'), '--prompt', QUESTION,
        '--max-new-tokens', String(MAX_NEW)]);
      assert.match(gen.prompt, /<\|im_start\|>user\n/);
      const r = await generate(page, QUESTION);
      assert.deepEqual(r.ids, gen.ids);
      assert.equal(r.text, gen.text);
    }
    assert.deepEqual(errors, []);
    await page.close();
  }
});

test('a Qwen2-VL HQQ package streams into the page and answers like `relvqa ask` on it', async () => {
  const image = join(FIXTURE, 'image2.png');
  const pkg = join(tmp, 'qwen-hqq4');
  const native = cli(['ask', '--json', '--model', pkg, '--image', image, '--question', QUESTION]);
  const { page, errors } = await open(`${modelUrl}qwen-hqq4`, 'cpu');
  // The wasm CPU kernels are the native ones: the same packed weights give the same answer.
  assertLikeCli(await ask(page, image, QUESTION), native, 'package on cpu');
  assert.deepEqual(errors, []);
  await page.close();
});

test('quantizing a Qwen2-VL folder in the tab says which group size does not fit', async () => {
  const page = await browser.newPage();
  await page.goto(`${pageUrl}?backend=cpu&bits=4&model=${encodeURIComponent(`${modelUrl}qwen`)}`);
  await page.waitForSelector('#load-stage[data-stage="failed"]', { timeout: TIMEOUT_MS });
  assert.match(await page.textContent('#error'),
    /down_proj\.weight: input dimension 96 is not a multiple of group size 64/);
  await page.close();
});
