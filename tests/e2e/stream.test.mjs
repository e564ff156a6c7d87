// Browser tests of the streamed packages (`make web` writes them into dist/web/models/<variant>):
// the variant choice with bytes, an answer from a streamed package like `relvqa ask --json` on
// it, the Cache API on a repeat visit, a network cut mid-shard resumed with a Range request
// (no byte fetched twice), a corrupted shard (clear message naming it, cache entry dropped),
// WebGPU (load stages, wasm memory below the CPU backend's, the CPU fallback after a device
// loss read from the Cache API) and the messages for a non-image upload and an empty question.
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
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run',
];
const CACHE = 'relvqa-shards-v1';
// What a WebGPU load may add to wasm memory beyond the tensors' bytes: the wgpu device
// (0.26 MB measured), the Selector (a 236 kB file and its weights), the tokenizer, one 256 KiB
// pushed piece (www/package-stream.js) and the transient copies of the tensor being uploaded
// (the largest is 128 kB of f16, held at most as bytes, f16, f32 and the mapped range).
const MEMORY_MARGIN = 1 << 20;

let server;
let url;
let dataDir;
let sample;
const launched = [];

/** A fresh browser profile, so its Cache API starts empty. */
async function launch({ webgpu = false } = {}) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-stream-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: webgpu ? [...CHROMIUM_ARGS, '--enable-unsafe-webgpu'] : CHROMIUM_ARGS,
  });
  launched.push({ browser, userDataDir });
  return browser;
}

const manifest = (variant) =>
  JSON.parse(readFileSync(join(ROOT, 'models', variant, 'manifest.json'), 'utf8'));

/** Served bytes of `variant`'s shards so far, by URL path. */
function shardBytesServed(variant) {
  return manifest(variant).shards.reduce(
    (n, s) => n + (server.served.get(`/models/${variant}/${s.file}`) || 0), 0);
}

const shardTotal = (variant) => manifest(variant).shards.reduce((n, s) => n + s.bytes, 0);

async function waitReady(page) {
  await Promise.race([
    page.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS }),
    page.waitForSelector('#error:not([hidden])', { timeout: LOAD_TIMEOUT_MS }).then(async () => {
      throw new Error(`the page showed an error: ${await page.textContent('#error')}`);
    }),
  ]);
}

async function open(browser, query) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url + query);
  return { page, errors };
}

async function cachedUrls(page) {
  return page.evaluate(async (name) => (await (await caches.open(name)).keys()).map((r) => r.url), CACHE);
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-stream-data-'));
  execFileSync(BIN, ['dataset', '--split', 'test', '--limit', '1', '--out', dataDir], { cwd: REPO });
  sample = JSON.parse(readFileSync(join(dataDir, 'questions.jsonl'), 'utf8').trim().split('\n')[0]);
  ({ server, url } = await serve(ROOT));
});

after(async () => {
  for (const { browser } of launched) await browser.close();
  server?.close();
  for (const d of [dataDir, ...launched.map((l) => l.userDataDir)]) {
    if (d) rmSync(d, { recursive: true, force: true });
  }
});

test('a streamed package answers like `relvqa ask --json` on it; a repeat visit reads the Cache API', async () => {
  const variant = 'hqq4';
  const browser = await launch();
  const { page, errors } = await open(browser, `?backend=cpu&variant=${variant}`);
  await waitReady(page);
  // The choice lists f16 and the packages, each with its bytes.
  const options = await page.$$eval('#variant-choice option', (os) => os.map((o) => o.textContent));
  assert.ok(options.some((o) => /^f16 \(.*B\)$/.test(o)), `f16 offered with bytes: ${options}`);
  assert.ok(options.some((o) => /^hqq4 \(.*B\)$/.test(o)), `hqq4 offered with bytes: ${options}`);
  assert.ok(options.some((o) => /^mbq4 \(.*B\)$/.test(o)), `mbq4 offered with bytes: ${options}`);
  assert.equal(await page.inputValue('#variant-choice'), variant);
  const total = shardTotal(variant);
  assert.equal(shardBytesServed(variant), total, 'every shard byte fetched once');
  assert.equal(await page.getAttribute('#load-stage', 'data-network'), String(total));

  const cli = JSON.parse(execFileSync(BIN, [
    'ask', '--json', '--model', join(ROOT, 'models', variant), '--image', join(dataDir, sample.image),
    '--question', sample.question, '--risk', '0.05',
  ], { cwd: REPO, encoding: 'utf8' }));
  await page.setInputFiles('#image-input', join(dataDir, sample.image));
  await page.fill('#question', sample.question);
  await page.click('#ask');
  await page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  assert.equal(await page.textContent('#answer'), cli.answer);
  const conf = Number(await page.getAttribute('#result', 'data-confidence'));
  // Packed kernels: native AVX2 and wasm simd128 round activations alike, but sum in
  // different orders.
  assert.ok(Math.abs(conf - cli.confidence) < 1e-3, `confidence ${conf} vs ${cli.confidence}`);
  assert.equal(await page.textContent('#confidence-source'), cli.confidence_source);
  assert.equal(await page.getAttribute('#result', 'data-abstain'), String(cli.abstain));
  assert.ok((await cachedUrls(page)).some((u) => u.includes(`/models/${variant}/`)), 'shard cached');
  await page.close();

  // Second visit: no shard byte from the network.
  const again = await open(browser, `?backend=cpu&variant=${variant}`);
  await waitReady(again.page);
  assert.equal(shardBytesServed(variant), total, 'no shard byte fetched again');
  assert.equal(await again.page.getAttribute('#load-stage', 'data-network'), '0');
  assert.equal(await again.page.getAttribute('#load-stage', 'data-cache'), String(total));
  assert.deepEqual([...errors, ...again.errors], []);
  await again.page.close();
});

test('a network cut mid-shard resumes with a Range request, fetching no byte twice', async () => {
  const variant = 'mbq4';
  const shard = manifest(variant).shards[0];
  const path = `/models/${variant}/${shard.file}`;
  const before = server.served.get(path) || 0;
  const cutAt = Math.floor(shard.bytes / 2) + 123;
  server.cutOnce.set(path, cutAt);
  const browser = await launch();
  const { page, errors } = await open(browser, `?backend=cpu&variant=${variant}`);
  await waitReady(page);
  assert.equal(server.cutOnce.has(path), false, 'the first response was cut');
  assert.equal((server.served.get(path) || 0) - before, shard.bytes,
    `served ${(server.served.get(path) || 0) - before} bytes of a ${shard.bytes}-byte shard`);
  // It answers.
  await page.setInputFiles('#image-input', join(dataDir, sample.image));
  await page.fill('#question', sample.question);
  await page.click('#ask');
  await page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  assert.deepEqual(errors, []);
  await page.close();
});

test('without Range support on the server, a cut shard is fetched again and its start skipped', async (t) => {
  const variant = 'hqq3';
  const shard = manifest(variant).shards[0];
  const path = `/models/${variant}/${shard.file}`;
  const before = server.served.get(path) || 0;
  const cutAt = Math.floor(shard.bytes / 3);
  server.cutOnce.set(path, cutAt);
  server.ignoreRange = true;
  t.after(() => { server.ignoreRange = false; });
  const browser = await launch();
  const { page, errors } = await open(browser, `?backend=cpu&variant=${variant}`);
  await waitReady(page);
  assert.equal((server.served.get(path) || 0) - before, cutAt + shard.bytes);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a corrupted shard stops the load naming the shard, and its cache entry is dropped', async () => {
  const variant = 'hqq4';
  const shard = manifest(variant).shards[0];
  const file = join(ROOT, 'models', variant, shard.file);
  const bad = Buffer.from(readFileSync(file));
  bad[Math.floor(bad.length / 2)] ^= 0xff;
  const browser = await launch();

  // From the network: refused, never cached.
  const page = await browser.newPage();
  await page.route(`**/models/${variant}/${shard.file}`, (route) => route.fulfill({
    status: 200, contentType: 'application/octet-stream', body: bad,
  }));
  await page.goto(`${url}?backend=cpu&variant=${variant}`);
  await page.waitForSelector('#error:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  const msg = await page.textContent('#error');
  assert.match(msg, new RegExp(`^${shard.file}: .*shard 0 \\(\`${shard.file}\`\\).*sha256 is [0-9a-f]{64}.*corrupt`));
  assert.equal(await page.getAttribute('#load-stage', 'data-stage'), 'failed');
  assert.deepEqual(await cachedUrls(page), []);
  await page.unroute(`**/models/${variant}/${shard.file}`);

  // A corrupted copy in the cache (a disk error, an old bug): refused and dropped.
  const key = `${url}models/${variant}/${shard.file}?sha256=${shard.sha256}`;
  await page.evaluate(async ([name, k, bytes]) => {
    await (await caches.open(name)).put(k, new Response(new Uint8Array(bytes)));
  }, [CACHE, key, [...bad]]);
  assert.deepEqual(await cachedUrls(page), [key]);
  await page.reload();
  await page.waitForSelector('#error:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  assert.match(await page.textContent('#error'),
    new RegExp(`^${shard.file} \\(browser cache\\): .*corrupt.*the cached copy was dropped`));
  assert.deepEqual(await cachedUrls(page), []);

  // The next visit fetches a good copy.
  await page.reload();
  await waitReady(page);
  assert.deepEqual(await cachedUrls(page), [key]);
  await page.close();
});

test('a streamed int4 package answers on WebGPU; after a device loss it is read again from the Cache API onto the CPU', async () => {
  const variant = 'mbq4';
  // Other tests fetch mbq4 too; this one counts from here, in a fresh profile.
  const servedBefore = shardBytesServed(variant);
  const browser = await launch({ webgpu: true });
  const { page, errors } = await open(browser, `?backend=webgpu&variant=${variant}&debug`);
  await waitReady(page);
  assert.equal(await page.getAttribute('#model-status', 'data-backend'), 'webgpu');
  // Each tensor went to the GPU as it arrived; then the model was assembled and the WebGPU
  // pipelines compiled by a warm-up answer.
  assert.match(await page.getAttribute('#load-stage', 'data-stages'),
    /^init download( verify| download)* upload compile$/);
  // No host copy of the weights is kept on WebGPU: wasm memory grows during the load by less
  // than the package's tensor bytes plus MEMORY_MARGIN (the old path, holding every decoded
  // tensor, grew by 4.1 MB on hqq4's 1.4 MB; this one by 1.2 MB), and it stays below what the
  // same package needs on the CPU backend, which holds every weight in wasm memory.
  const gpuMemory = Number(await page.getAttribute('#load-stage', 'data-wasm-memory'));
  const growth = gpuMemory - Number(await page.getAttribute('#load-stage', 'data-wasm-memory-at-init'));
  assert.ok(growth < shardTotal(variant) + MEMORY_MARGIN,
    `wasm memory grew by ${growth} bytes loading ${shardTotal(variant)} bytes of tensors on WebGPU`);
  // `relvqa ask` runs on the CPU backend.
  const cli = JSON.parse(execFileSync(BIN, [
    'ask', '--json', '--model', join(ROOT, 'models', variant), '--image', join(dataDir, sample.image),
    '--question', sample.question, '--risk', '0.05',
  ], { cwd: REPO, encoding: 'utf8' }));
  await page.setInputFiles('#image-input', join(dataDir, sample.image));
  await page.fill('#question', sample.question);
  await page.click('#ask');
  await page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#backend', 'data-backend'), 'webgpu');
  assert.equal(await page.textContent('#answer'), cli.answer);
  // The GPU dequantizes exactly; the CPU kernels round activations to int8 (ARCHITECTURE.md).
  const conf = Number(await page.getAttribute('#result', 'data-confidence'));
  assert.ok(Math.abs(conf - cli.confidence) < 2e-2, `confidence ${conf} vs ${cli.confidence}`);

  const served = shardBytesServed(variant);
  assert.equal(served - servedBefore, shardTotal(variant));
  assert.equal(await page.evaluate(() => window.relvqaDebug.loseDevice()), true);
  await page.evaluate(() => { document.getElementById('result').hidden = true; });
  await page.click('#ask');
  await page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#backend', 'data-backend'), 'cpu');
  assert.match(await page.textContent('#backend-notice'), /WebGPU failed: gpu \(device lost\)/);
  assert.equal(shardBytesServed(variant), served, 'the CPU fallback read the Cache API, not the network');
  assert.equal(await page.textContent('#answer'), cli.answer);
  const cpuConf = Number(await page.getAttribute('#result', 'data-confidence'));
  assert.ok(Math.abs(cpuConf - cli.confidence) < 1e-4, `confidence ${cpuConf} vs ${cli.confidence}`);
  assert.deepEqual(errors, []);
  await page.close();

  const cpu = await open(browser, `?backend=cpu&variant=${variant}`);
  await waitReady(cpu.page);
  const cpuMemory = Number(await cpu.page.getAttribute('#load-stage', 'data-wasm-memory'));
  assert.ok(gpuMemory < cpuMemory, `wasm memory on WebGPU ${gpuMemory} vs on the CPU ${cpuMemory}`);
  await cpu.page.close();
});

test('a non-image upload and an empty question get clear messages', async () => {
  const browser = await launch();
  const { page, errors } = await open(browser, '?backend=cpu');
  await waitReady(page);
  await page.setInputFiles('#image-input', {
    name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello'),
  });
  await page.waitForSelector('#error:not([hidden])');
  assert.equal(await page.textContent('#error'),
    'notes.txt is not a PNG or JPEG image (it is text/plain); choose a PNG or JPEG');
  await page.fill('#question', sample.question);
  await page.click('#ask');
  assert.equal(await page.textContent('#error'), 'Choose an image first (PNG or JPEG).');
  await page.setInputFiles('#image-input', join(dataDir, sample.image));
  await page.fill('#question', '   ');
  await page.click('#ask');
  assert.equal(await page.textContent('#error'), 'Type a question about the image first.');
  assert.equal(await page.isHidden('#result'), true);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a bit width quantized in the tab with HQQ answers like the HQQ package (same weights, f16 Selector)', async () => {
  const browser = await launch();
  const { page, errors } = await open(browser, '?backend=cpu&variant=hqq4-tab');
  await waitReady(page);
  assert.match(await page.textContent('#status-text'), /quantized in this tab with HQQ int4/);
  assert.equal(await page.inputValue('#variant-choice'), 'hqq4-tab');
  const label = await page.$eval('#variant-choice option:checked', (o) => o.textContent);
  assert.match(label, /^hqq4, quantized in this tab from f16 \(.*B download\)$/);
  await page.setInputFiles('#image-input', join(dataDir, sample.image));
  await page.fill('#question', sample.question);
  await page.click('#ask');
  await page.waitForSelector('#result:not([hidden])');
  // In-memory HQQ is bit-identical to `relvqa quantize --method hqq` (tests/quant.rs), so the
  // answer and MaxProb are the package's; the confidence comes from the f16 Selector.
  const pkg = JSON.parse(execFileSync(BIN, [
    'ask', '--json', '--model', join(ROOT, 'models', 'hqq4'), '--image', join(dataDir, sample.image),
    '--question', sample.question, '--risk', '0.05',
  ], { cwd: REPO, encoding: 'utf8' }));
  assert.equal(await page.textContent('#answer'), pkg.answer);
  assert.equal(await page.textContent('#maxprob'), pkg.maxprob.toFixed(3));
  assert.deepEqual(errors, []);
  await page.close();
});
