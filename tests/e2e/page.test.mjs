// End-to-end tests of the web page in headless Chromium: the page must give the same answer
// and confidence as `relvqa ask --json` on the CPU and on WebGPU, fall back to the CPU (and
// say why) when WebGPU is missing or its device is lost, and render model output as text.
//
// Needs `make web` (dist/web) and `cargo build --release` (target/release/relvqa) first;
// `make e2e` does both. Set RELVQA_BIN / RELVQA_WEB_ROOT to use other locations.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
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
// DESIGN.md: always these; WebGPU in headless Chromium only with --enable-unsafe-webgpu.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run',
];

let server;
let url;
let dataDir;
let samples;
/** `relvqa ask --json` for each sample, computed once. */
let cliAnswers;
/** Browsers launched (with their fresh user-data dirs), closed in `after`. */
const launched = [];
let gpuBrowser;

async function launch({ webgpu }) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-chromium-'));
  // launchPersistentContext is how Playwright takes a --user-data-dir.
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: webgpu ? [...CHROMIUM_ARGS, '--enable-unsafe-webgpu'] : CHROMIUM_ARGS,
  });
  launched.push({ browser, userDataDir });
  return browser;
}

function cliAsk(image, question, risk = '0.05') {
  return JSON.parse(execFileSync(BIN, [
    'ask', '--json', '--model', join(REPO, 'models', 'default'), '--image', image,
    '--question', question, '--risk', risk,
  ], { cwd: REPO, encoding: 'utf8' }));
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'relvqa-e2e-data-'));
  execFileSync(BIN, ['dataset', '--split', 'test', '--limit', '2', '--out', dataDir], { cwd: REPO });
  samples = readFileSync(join(dataDir, 'questions.jsonl'), 'utf8')
    .trim().split('\n').map((l) => JSON.parse(l));
  cliAnswers = samples.map((s) => cliAsk(join(dataDir, s.image), s.question));
  ({ server, url } = await serve(ROOT));
  gpuBrowser = await launch({ webgpu: true });
});

after(async () => {
  for (const { browser } of launched) await browser.close();
  server?.close();
  for (const d of [dataDir, ...launched.map((l) => l.userDataDir)]) {
    if (d) rmSync(d, { recursive: true, force: true });
  }
});

/** Open the page with `query` (e.g. `?backend=cpu`) and wait for the model. */
async function openPage(browser, query = '') {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url + query);
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS })
    .catch(async (e) => {
      throw new Error(`model never became ready: ${await page.textContent('#error')} ${errors} ${e}`);
    });
  return { page, errors };
}

/** Click Ask and wait for a new result (or fail with the error the page shows). */
async function submit(page) {
  await page.evaluate(() => { document.getElementById('result').hidden = true; });
  await page.click('#ask');
  await Promise.race([
    page.waitForSelector('#result:not([hidden])', { timeout: LOAD_TIMEOUT_MS }),
    page.waitForSelector('#error:not([hidden])', { timeout: LOAD_TIMEOUT_MS }).then(async () => {
      throw new Error(`the page showed an error: ${await page.textContent('#error')}`);
    }),
  ]);
}

/** Ask `question` about `image` at `risk` on an open page; resolves when the result shows. */
async function ask(page, image, question, risk = '0.05') {
  await page.setInputFiles('#image-input', image);
  await page.fill('#question', question);
  await page.selectOption('#risk', risk);
  await submit(page);
}

/** The shown answer, confidence and decision are those of `relvqa ask --json`. */
async function assertLikeCli(page, cli, what) {
  assert.equal(await page.textContent('#answer'), cli.answer, `answer to ${what}`);
  const shown = await page.getAttribute('#result', 'data-confidence');
  // Native and wasm (and GPU) sum floats in different orders; the shown value has 3 places.
  assert.ok(Math.abs(Number(shown) - cli.confidence) < 1e-4,
    `confidence ${shown} vs ${cli.confidence} (${what})`);
  assert.equal(await page.textContent('#confidence'), cli.confidence.toFixed(3));
  assert.equal(await page.textContent('#confidence-source'), cli.confidence_source);
  assert.equal(await page.getAttribute('#result', 'data-abstain'), String(cli.abstain));
  assert.equal(await page.textContent('#reason'), cli.reason);
}

async function backendShown(page) {
  return {
    backend: await page.getAttribute('#backend', 'data-backend'),
    label: await page.textContent('#backend'),
    notice: (await page.isVisible('#backend-notice')) ? await page.textContent('#backend-notice') : null,
  };
}

test('on the CPU the page answers like `relvqa ask --json`', async () => {
  const { page, errors } = await openPage(gpuBrowser, '?backend=cpu');
  for (const [i, s] of samples.entries()) {
    await ask(page, join(dataDir, s.image), s.question);
    await assertLikeCli(page, cliAnswers[i], `"${s.question}"`);
    assert.deepEqual(await backendShown(page), { backend: 'cpu', label: 'CPU', notice: null });
  }
  assert.deepEqual(errors, []);
  await page.close();
});

test('with --enable-unsafe-webgpu the page answers on WebGPU like `relvqa ask --json`', async (t) => {
  const { page, errors } = await openPage(gpuBrowser, '?backend=webgpu');
  for (const [i, s] of samples.entries()) {
    await ask(page, join(dataDir, s.image), s.question);
    // A missing adapter is a failure here, not a skip: the page would say why it fell back.
    const shown = await backendShown(page);
    assert.equal(shown.backend, 'webgpu', `answered on WebGPU, not: ${JSON.stringify(shown)}`);
    assert.match(shown.label, /^WebGPU \(.*SwiftShader.*\)$/i);
    assert.equal(shown.notice, null);
    if (i === 0) t.diagnostic(`adapter: ${shown.label}`);
    await assertLikeCli(page, cliAnswers[i], `"${s.question}" on WebGPU`);
  }
  // `make screenshot` sets this: the README's picture of the page is this test's last answer.
  if (process.env.RELVQA_SCREENSHOT) {
    await page.setViewportSize({ width: 900, height: 1000 });
    await page.screenshot({ path: process.env.RELVQA_SCREENSHOT, fullPage: true });
  }
  assert.deepEqual(errors, []);
  await page.close();
});

test('without WebGPU the page falls back to the CPU and says why', async () => {
  const browser = await launch({ webgpu: false });
  const { page, errors } = await openPage(browser);
  assert.equal(await page.getAttribute('#model-status', 'data-backend'), 'cpu');
  assert.match(await page.textContent('#status-text'), /^Model ready on CPU /);
  const s = samples[0];
  await ask(page, join(dataDir, s.image), s.question);
  await assertLikeCli(page, cliAnswers[0], `"${s.question}" after the fallback`);
  const shown = await backendShown(page);
  assert.equal(shown.backend, 'cpu');
  assert.match(shown.notice ?? '', /^Running on the CPU because WebGPU failed: gpu \(no adapter\): /);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a lost WebGPU device gives a typed error, and the page answers on the CPU', async () => {
  const { page, errors } = await openPage(gpuBrowser, '?backend=webgpu&debug');
  const s = samples[0];
  await ask(page, join(dataDir, s.image), s.question);
  assert.equal((await backendShown(page)).backend, 'webgpu');
  assert.equal(await page.evaluate(() => window.relvqaDebug.loseDevice()), true);
  await submit(page);
  const shown = await backendShown(page);
  assert.equal(shown.backend, 'cpu');
  assert.match(shown.notice ?? '', /^Running on the CPU because WebGPU failed: gpu \(device lost\): /);
  await assertLikeCli(page, cliAnswers[0], `"${s.question}" after the device loss`);
  // It stays on the CPU, still saying why.
  await submit(page);
  assert.equal((await backendShown(page)).backend, 'cpu');
  assert.ok(await page.isVisible('#backend-notice'));
  assert.deepEqual(errors, []);
  await page.close();
});

test('the packed CPU kernels run on wasm simd128 and match their scalar reference', async () => {
  const { page, errors } = await openPage(gpuBrowser, '?backend=cpu&debug');
  const checks = await page.evaluate(() => window.relvqaDebug.cpuKernelSelfTest());
  console.log(`wasm CPU kernels: ${checks.map((c) => `int${c.bits} g${c.group} ${c.isa} ${c.rel_err.toExponential(1)}`).join(', ')}`);
  assert.equal(checks.length, 12, 'bits 8/4/3/2 x groups 32/64/128');
  // The build enables simd128 (.cargo/config.toml); without it the page would run scalar code.
  assert.deepEqual([...new Set(checks.map((c) => c.isa))], ['simd128']);
  assert.deepEqual(checks.filter((c) => !c.ok), []);
  assert.ok(checks.every((c) => c.cases > 0));
  assert.deepEqual(errors, []);
  await page.close();
});

test('every WGSL kernel matches the CPU backend on Chromium\'s WebGPU', async () => {
  const { page, errors } = await openPage(gpuBrowser, '?backend=cpu&debug');
  const report = await page.evaluate(() => window.relvqaDebug.selfTest());
  console.log(`WebGPU self-test on ${report.adapter} (subgroups ${report.subgroups}): ` +
    `${report.checks.length} ops, worst relative error ` +
    `${Math.max(...report.checks.map((c) => c.rel_err)).toExponential(2)}`);
  assert.ok(report.checks.length > 30, `only ${report.checks.length} checks`);
  const bad = report.checks.filter((c) => !(c.rel_err <= c.tol));
  assert.deepEqual(bad, [], 'ops over tolerance on WebGPU');
  assert.equal(report.failed, 0);
  for (const op of ['int4 packed linear', 'int3 packed linear', 'attention', 'KV cache', 'rope']) {
    assert.ok(report.checks.some((c) => c.name.startsWith(op)), `no ${op} check`);
  }
  assert.deepEqual(errors, []);
  await page.close();
});

test('a model named by URL or picked as a folder loads and answers like the CLI', async () => {
  const s = samples[0];
  const image = join(dataDir, s.image);
  // By URL: a Hugging Face style folder (config.json, tokenizer.json, model.safetensors).
  const { page, errors } = await openPage(gpuBrowser, '?backend=cpu&model=models/default');
  await ask(page, image, s.question);
  await assertLikeCli(page, cliAnswers[0], 'the model loaded by URL');
  // A folder picked on disk reaches the worker as blob: URLs.
  await page.setInputFiles('#model-folder', join(REPO, 'models', 'default'));
  await page.click('#model-load');
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS });
  await ask(page, image, s.question);
  await assertLikeCli(page, cliAnswers[0], 'the model loaded from a folder');
  // A URL with nothing there says what is missing.
  await page.evaluate(() => { document.getElementById('model-folder').value = ''; });
  await page.fill('#model-url', 'models/no-such-model');
  await page.click('#model-load');
  await page.waitForFunction(() => document.querySelector('#error')?.textContent.includes('HTTP 404'));
  assert.match(await page.textContent('#error'), /no-such-model\/config\.json: HTTP 404/);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the widget page embeds two independent widgets and an iframe, answering like the CLI', async () => {
  const page = await gpuBrowser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Workers' fetches count too: the widgets' model requests show how they loaded.
  const requested = [];
  page.context().on('request', (r) => requested.push(r.url()));
  await page.goto(`${url}embed.html`);
  // Playwright's CSS selectors pierce open shadow roots.
  for (const id of ['careful', 'relaxed']) {
    await page.waitForSelector(`#${id} .status[data-ready="true"]`, { timeout: LOAD_TIMEOUT_MS });
  }
  assert.equal(await page.getAttribute('#relaxed .status', 'data-backend'), 'cpu');
  // The default widget streams the f16 package (tensor by tensor), not the whole checkpoint.
  assert.ok(requested.some((u) => u.endsWith('/models/f16/manifest.json')), 'no package manifest fetched');
  assert.ok(!requested.some((u) => u.includes('/models/default/model.safetensors')),
    'a widget fetched the whole model.safetensors');
  const s = samples[0];
  const image = join(dataDir, s.image);
  for (const [id, risk] of [['careful', '0.01'], ['relaxed', '0.2']]) {
    await page.setInputFiles(`#${id} .image`, image);
    await page.fill(`#${id} .question`, s.question);
    await page.click(`#${id} .ask`);
    await page.waitForSelector(`#${id} .result:not([hidden])`);
    const cli = cliAsk(image, s.question, risk);
    assert.equal(await page.textContent(`#${id} .answer`), cli.answer, `${id}: answer`);
    assert.equal(await page.getAttribute(`#${id} .result`, 'data-abstain'), String(cli.abstain),
      `${id}: abstain at risk ${risk}`);
    assert.equal(await page.textContent(`#${id} .reason`), cli.reason, `${id}: reason`);
    const shown = Number(await page.getAttribute(`#${id} .result`, 'data-confidence'));
    assert.ok(Math.abs(shown - cli.confidence) < 1e-4, `${id}: confidence ${shown} vs ${cli.confidence}`);
  }
  // The host's styles stay outside the shadow roots, the widgets' inside.
  const askBg = await page.$eval('#careful', (el) =>
    getComputedStyle(el.shadowRoot.querySelector('.ask')).backgroundColor);
  assert.notEqual(askBg, 'rgb(255, 105, 180)', 'the host\'s button style leaked into the widget');
  assert.equal(await page.$eval('#host-button', (el) => getComputedStyle(el).backgroundColor),
    'rgb(255, 105, 180)');
  // The full page in an iframe loads too.
  const frame = page.frames().find((f) => f.url().includes('index.html'));
  assert.ok(frame, 'no iframe');
  await frame.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS });
  assert.deepEqual(errors, []);
  await page.close();
});

test('the benchmark page computes the numbers `relvqa eval --out` computes on the same questions', async () => {
  const [n, val, percents] = [12, 12, '0,50,100'];
  const page = await gpuBrowser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${url}bench.html?n=${n}&val=${val}&percents=${percents}&backend=cpu&autorun`);
  await page.waitForSelector('#bench-status[data-done]', { timeout: LOAD_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#bench-status', 'data-done'), 'true',
    `benchmark failed: ${await page.textContent('#error')}`);
  const web = await page.evaluate(() => window.relvqaBench.result);
  const out = mkdtempSync(join(tmpdir(), 'relvqa-e2e-report-'));
  execFileSync(BIN, ['eval', '--variants', 'f16', '--limit', String(n), '--val', String(val),
    '--dev', String(val), '--ood', percents, '--out', out], { cwd: REPO, stdio: 'ignore' });
  const cli = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')).variants[0];
  rmSync(out, { recursive: true, force: true });
  assert.equal(web.mixtures.length, cli.mixtures.length);
  // Native and wasm sum floats in different orders (confidences agree to ~1e-7), so metrics
  // agree to float noise unless two confidences swap ranks; on these questions none do.
  const close = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-6, `${what}: page ${a}, CLI ${b}`);
  close(web.val_accuracy, cli.val_accuracy, 'val accuracy');
  for (const [i, m] of web.mixtures.entries()) {
    const c = cli.mixtures[i];
    assert.equal(m.ood_percent, c.ood_percent);
    assert.equal(m.n_ood, c.n_ood, `${m.ood_percent}% OOD: OOD questions`);
    close(m.accuracy, c.accuracy, `${m.ood_percent}% OOD accuracy`);
    for (const est of ['maxprob', 'selector']) {
      const [a, b] = [m.estimators[est], c.estimators[est]];
      const what = `${m.ood_percent}% OOD ${est}`;
      close(a.auc, b.auc, `${what} AUC`);
      close(a.ece, b.ece, `${what} ECE`);
      for (const r of ['1', '5', '10', '20']) {
        close(a.coverage_at_risk[r].coverage, b.coverage_at_risk[r].coverage, `${what} C@${r}%`);
      }
      for (const cost of ['1', '10', '100']) close(a.phi[cost].phi, b.phi[cost].phi, `${what} Phi_${cost}`);
    }
  }
  // The table shows every (mixture, estimator) row; the exports exist.
  assert.equal(await page.locator('#bench-table tbody tr').count(), web.mixtures.length * 2);
  assert.ok((await page.getAttribute('#export-csv', 'href')).startsWith('blob:'));
  assert.ok(await page.locator('#plot-rc svg polyline').count() > 0);
  // A quantized package, streamed by the same code as the page's, benchmarks too.
  await page.goto(`${url}bench.html?model=hqq4&n=6&val=6&percents=0,100&backend=cpu&autorun`);
  await page.waitForSelector('#bench-status[data-done]', { timeout: LOAD_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#bench-status', 'data-done'), 'true',
    `hqq4 benchmark failed: ${await page.textContent('#error')}`);
  const q = await page.evaluate(() => window.relvqaBench.result);
  assert.equal(q.model, 'hqq4');
  assert.equal(q.mixtures.length, 2);
  assert.ok(q.bytes < web.bytes, `hqq4 (${q.bytes} B) is smaller than f16 (${web.bytes} B)`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('sample questions from the test and OOD sets fill the form, and a pasted image is taken', async () => {
  const { page, errors } = await openPage(gpuBrowser, '?backend=cpu');
  await page.waitForSelector('#samples:not([hidden])');
  assert.ok(await page.locator('#samples .sample[data-set="test"]').count() > 0, 'no test samples');
  assert.ok(await page.locator('#samples .sample[data-set="ood"]').count() > 0, 'no OOD samples');
  const title = await page.getAttribute('#samples .sample[data-set="ood"] >> nth=0', 'title');
  await page.click('#samples .sample[data-set="ood"] >> nth=0');
  await page.waitForFunction(() => !document.getElementById('ask').disabled);
  assert.ok(title.startsWith(await page.inputValue('#question')), `question from the sample: ${title}`);
  await submit(page);
  assert.ok((await page.textContent('#answer')).length > 0);
  // Paste: the test image of sample 0 as clipboard data.
  const png = readFileSync(join(dataDir, samples[0].image)).toString('base64');
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
    document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
  }, png);
  await page.waitForFunction(() => document.getElementById('drop-hint').textContent === 'pasted.png');
  await page.fill('#question', samples[0].question);
  await submit(page);
  await assertLikeCli(page, cliAnswers[0], 'a pasted image');
  assert.deepEqual(errors, []);
  await page.close();
});

test('the backend can be switched in the page', async () => {
  const { page } = await openPage(gpuBrowser, '?backend=cpu');
  await page.selectOption('#backend-choice', 'webgpu');
  await page.waitForSelector('#model-status[data-ready="true"][data-backend="webgpu"]',
    { timeout: LOAD_TIMEOUT_MS });
  assert.match(await page.textContent('#status-text'), /^Model ready on WebGPU \(/);
  await page.close();
});

test('model output is rendered as text, never as HTML', async () => {
  const s = samples[0];
  const cli = cliAnswers[0];
  // Rename the answer's word in the served tokenizer to markup: the model then "says" HTML.
  const word = cli.answer.split(' ')[0];
  assert.ok(!s.question.split(' ').includes(word), 'pick a sample whose answer is not in the question');
  const payload = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
  // The page's f16 is a package, whose manifest pins the tokenizer's sha256: serve a manifest
  // that pins the renamed one.
  const pkg = join(ROOT, 'models', 'f16');
  const tok = JSON.parse(readFileSync(join(pkg, 'tokenizer.json'), 'utf8'));
  const vocab = tok.model.vocab;
  assert.ok(word in vocab, `answer word ${word} is in the vocabulary`);
  vocab[payload] = vocab[word];
  delete vocab[word];
  const body = JSON.stringify(tok);
  const manifest = JSON.parse(readFileSync(join(pkg, 'manifest.json'), 'utf8'));
  manifest.tokenizer.sha256 = createHash('sha256').update(body).digest('hex');
  const page = await gpuBrowser.newPage();
  await page.route(`**/models/f16/${manifest.tokenizer.file}`, (route) => route.fulfill({
    status: 200, contentType: 'application/json', body,
  }));
  await page.route('**/models/f16/manifest.json', (route) => route.fulfill({
    status: 200, contentType: 'application/json', body: JSON.stringify(manifest),
  }));
  await page.goto(url);
  await page.waitForSelector('#model-status[data-ready="true"]', { timeout: LOAD_TIMEOUT_MS });
  await ask(page, join(dataDir, s.image), s.question);
  const answer = await page.textContent('#answer');
  assert.ok(answer.includes(payload), `answer shown as text: ${answer}`);
  assert.equal(await page.locator('#result img, #result b').count(), 0, 'no element was injected');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await page.close();
});

test('a broken image shows the crate\'s typed error, and the page recovers', async () => {
  const { page } = await openPage(gpuBrowser);
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
