// Text-only generation in the page ("Text only"): the language model alone, through the
// checkpoint's chat template, must give the same token ids as `relvqa generate --json` for the
// same model: from a Hugging Face style folder on another origin (CPU and WebGPU), from a
// package that lists its chat template (checked against the manifest), and as raw text for a
// model with no template. Real-size numbers come from tests/e2e/bench-real-size.mjs (`make bench-browser`).
//
// Needs `make web` and `cargo build --release` first (`make e2e` does both).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || join(REPO, 'target');
const BIN = process.env.RELVQA_BIN || join(TARGET, 'release', 'relvqa');
const ROOT = process.env.RELVQA_WEB_ROOT || join(REPO, 'dist', 'web');
const TIMEOUT_MS = 120_000;
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--enable-unsafe-webgpu',
];
// A chat template in the shipped model's word vocabulary, written as a checkpoint's
// tokenizer_config.json holds one.
const TEMPLATE = "<|im_start|>{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}"
  + '<end_of_utterance>{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}';
const PROMPT = 'what color is the circle ?';
const MAX_NEW = 6;

let page;
let pageUrl;
let modelUrl;
let servers = [];
let browser;
let tmp;
let userDataDir;

function cliGenerate(model, prompt, raw = false) {
  const args = ['generate', '--json', '--model', model, '--prompt', prompt,
    '--max-new-tokens', String(MAX_NEW)];
  if (raw) args.push('--raw');
  return JSON.parse(execFileSync(BIN, args, { cwd: REPO, encoding: 'utf8' }));
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'relvqa-e2e-text-'));
  const chat = join(tmp, 'chat');
  mkdirSync(chat);
  for (const f of ['config.json', 'tokenizer.json', 'model.safetensors']) {
    copyFileSync(join(REPO, 'models', 'default', f), join(chat, f));
  }
  writeFileSync(join(chat, 'tokenizer_config.json'), JSON.stringify({ chat_template: TEMPLATE }));
  execFileSync(BIN, ['quantize', '--model', chat, '--method', 'hqq', '--bits', '4',
    '--out', join(tmp, 'chat-hqq4')], { cwd: REPO, stdio: 'ignore' });
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

/** Open the page on `model` (a URL) and `backend`; resolves when the model is ready. */
async function open(model, backend) {
  page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${pageUrl}?backend=${backend}&model=${encodeURIComponent(model)}`);
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: TIMEOUT_MS })
    .catch(async (e) => {
      throw new Error(`model never became ready: ${await page.textContent('#error')} ${errors} ${e}`);
    });
  await page.click('#text-only summary');
  return errors;
}

/** Generate from the "Text only" form; resolves to the shown reply, or throws the page's error. */
async function generate(prompt, { raw } = {}) {
  await page.evaluate(() => {
    document.getElementById('text-output').hidden = true;
    document.getElementById('error').hidden = true;
  });
  await page.fill('#text-prompt', prompt);
  await page.fill('#text-max', String(MAX_NEW));
  if (raw !== undefined) await page.setChecked('#text-raw', raw);
  await page.click('#text-generate');
  await Promise.race([
    page.waitForSelector('#text-output:not([hidden])', { timeout: TIMEOUT_MS }),
    page.waitForSelector('#error:not([hidden])', { timeout: TIMEOUT_MS }).then(async () => {
      throw new Error(await page.textContent('#error'));
    }),
  ]);
  const out = await page.$('#text-output');
  return {
    text: await out.textContent(),
    ids: (await out.getAttribute('data-ids')).split(',').filter(Boolean).map(Number),
    stopped: (await out.getAttribute('data-stopped')) === 'true',
    backend: await out.getAttribute('data-backend'),
    stats: await page.textContent('#text-stats'),
  };
}

test('a folder with a chat template generates like `relvqa generate`, on the CPU and WebGPU', async () => {
  const cli = cliGenerate(join(tmp, 'chat'), PROMPT);
  assert.match(cli.prompt, /^<\|im_start\|>user : what color/);
  for (const backend of ['cpu', 'webgpu']) {
    const errors = await open(`${modelUrl}chat`, backend);
    assert.equal(await page.getAttribute('#text-only', 'data-chat-template'), 'true');
    assert.equal(await page.isChecked('#text-raw'), false);
    const r = await generate(PROMPT);
    assert.equal(r.backend, backend);
    assert.deepEqual(r.ids, cli.ids, `ids on ${backend}`);
    assert.equal(r.text, cli.text);
    assert.equal(r.stopped, cli.stopped);
    assert.match(r.stats, /prompt tokens, \d+ new .* prefill \d+ ms \([\d.]+ tokens\/s\), decode [\d.]+ tokens\/s/);
    assert.match(r.stats, new RegExp(`^${cli.prompt_tokens} prompt tokens`));
    assert.deepEqual(errors, []);
    await page.close();
  }
});

test('a package carries its chat template, checked against the manifest', async () => {
  const pkg = join(tmp, 'chat-hqq4');
  const cli = cliGenerate(pkg, PROMPT);
  const errors = await open(`${modelUrl}chat-hqq4`, 'cpu');
  assert.equal(await page.getAttribute('#text-only', 'data-chat-template'), 'true');
  const r = await generate(PROMPT);
  // The wasm CPU kernels are the native ones: the same ids, bit for bit.
  assert.deepEqual(r.ids, cli.ids);
  assert.equal(r.text, cli.text);
  assert.deepEqual(errors, []);
  await page.close();
  // A template changed after packaging no longer matches the manifest's sha256.
  writeFileSync(join(pkg, 'tokenizer_config.json'), JSON.stringify({ chat_template: 'x' }));
  page = await browser.newPage();
  await page.goto(`${pageUrl}?backend=cpu&model=${encodeURIComponent(`${modelUrl}chat-hqq4`)}`);
  await page.waitForSelector('#load-stage[data-stage="failed"]', { timeout: TIMEOUT_MS });
  assert.match(await page.textContent('#error'), /tokenizer_config\.json.*sha256/);
  await page.close();
});

test('without a chat template the page continues raw text and says why a chat prompt cannot run', async () => {
  const errors = await open('models/default', 'cpu');
  assert.equal(await page.getAttribute('#text-only', 'data-chat-template'), 'false');
  assert.equal(await page.isChecked('#text-raw'), true, 'raw is preselected');
  const cli = cliGenerate(join(REPO, 'models', 'default'), 'how many objects are there', true);
  const r = await generate('how many objects are there');
  assert.deepEqual(r.ids, cli.ids);
  await assert.rejects(generate(PROMPT, { raw: false }), /no chat template/);
  await assert.rejects(generate('   ', { raw: true }), /Type a prompt first/);
  assert.deepEqual(errors, []);
  await page.close();
});
