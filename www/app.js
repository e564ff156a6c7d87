// The page: reads the image and question, sends them to the worker, shows the decision.
// Everything the model says is inserted with textContent, never as HTML.

const MODELS = new URL('models/', document.baseURI).href;
// Used when models/index.json is missing: the f16 model directory alone.
const F16 = { name: 'f16', path: 'default', kind: 'dir', bytes: null };
// `?backend=auto|webgpu|cpu` and `?variant=f16|hqq4|...` preselect, `?model=URL&bits=N` loads
// another model; `?debug` exposes
// `window.relvqaDebug`.
const PARAMS = new URLSearchParams(document.location.search);

const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });

let imageBytes = null;
let variants = [F16];
let ready = false;
let nextId = 1;
let pending = null;
// Test hook calls waiting for the worker's reply, by message id.
const debugCalls = new Map();

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

// Ask stays clickable without an image or a question, so a click says what is missing.
function updateAskButton() {
  $('ask').disabled = !(ready && pending === null);
  $('text-generate').disabled = !(ready && pending === null);
}

const formatBytes = (n) => (n === null || n === undefined ? ''
  : n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(0)} kB`);

const fmt = (x) => (x === null || x === undefined ? '—' : x.toFixed(3));

const TIMING_ORDER = ['init', 'fetch', 'load', 'compile', 'preprocess', 'generate', 'decide', 'fallback'];

function formatTimings(t) {
  const keys = Object.keys(t || {}).sort((a, b) =>
    (TIMING_ORDER.indexOf(a) + 1 || 99) - (TIMING_ORDER.indexOf(b) + 1 || 99));
  return keys.map((k) => `${k} ${Number(t[k]).toFixed(0)} ms`).join(', ');
}

const backendLabel = (backend, adapter) => (backend === 'webgpu' ? `WebGPU (${adapter})` : 'CPU');

/** Say where the model runs and, after a fallback to the CPU, why (one line, as text). */
function showBackend(backend, adapter, fallback) {
  $('model-status').dataset.backend = backend;
  const notice = $('backend-notice');
  notice.textContent = fallback ? `Running on the CPU because WebGPU failed: ${fallback}` : '';
  notice.hidden = !fallback;
}

function render(r) {
  const section = $('result');
  section.classList.toggle('abstained', r.abstain);
  section.dataset.confidence = String(r.confidence);
  section.dataset.abstain = String(r.abstain);
  $('answer').textContent = r.answer;
  $('abstain-badge').textContent = r.abstain ? 'abstained' : 'answered';
  $('reason').textContent = r.reason;
  $('confidence-bar').style.width = `${Math.max(0, Math.min(1, r.confidence)) * 100}%`;
  const mark = $('threshold-mark');
  if (r.threshold === null || r.threshold === undefined) {
    mark.style.display = 'none';
  } else {
    mark.style.display = 'block';
    mark.style.left = `${Math.max(0, Math.min(1, r.threshold)) * 100}%`;
  }
  $('confidence').textContent = fmt(r.confidence);
  $('confidence-source').textContent = r.confidence_source;
  $('maxprob').textContent = fmt(r.maxprob);
  $('selector').textContent = r.selector === null ? 'none shipped' : fmt(r.selector);
  $('threshold').textContent = r.threshold === null
    ? (r.calibrated ? 'none reaches this risk' : 'uncalibrated') : fmt(r.threshold);
  $('backend').textContent = backendLabel(r.backend, r.adapter);
  $('backend').dataset.backend = r.backend;
  showBackend(r.backend, r.adapter, r.fallback);
  $('timings').textContent = formatTimings(r.timings_ms);
  section.hidden = false;
}

worker.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'progress') {
    showProgress(m);
  } else if (m.type === 'ready') {
    ready = true;
    $('model-status').classList.add('ready');
    $('model-status').dataset.ready = 'true';
    $('status-text').textContent = `Model ready on ${backendLabel(m.backend, m.adapter)} `
      + `(fetch ${m.timings_ms.fetch.toFixed(0)} ms, load ${m.timings_ms.load.toFixed(0)} ms`
      + `${m.timings_ms.compile > 0 ? `, compile ${m.timings_ms.compile.toFixed(0)} ms` : ''}; `
      + `${formatBytes(m.stats.wasmMemory)} of wasm memory).`;
    if (currentVariant().kind === 'browser-hqq') {
      $('status-text').textContent += ` Weights quantized in this tab with HQQ int${currentVariant().bits}; `
        + 'confidence and thresholds from the f16 model\'s Selector.';
    }
    $('load-stage').dataset.stage = 'ready';
    $('load-stage').dataset.network = String(m.stats.network);
    $('load-stage').dataset.cache = String(m.stats.cache);
    $('load-stage').dataset.wasmMemory = String(m.stats.wasmMemory);
    $('load-stage').dataset.wasmMemoryAtInit = String(m.stats.wasmMemoryAtInit);
    $('load-stage').textContent = m.stats.network + m.stats.cache > 0
      ? `${formatBytes(m.stats.network)} from the network, ${formatBytes(m.stats.cache)} from the browser cache`
      : '';
    showBackend(m.backend, m.adapter, m.fallback);
    $('text-only').dataset.chatTemplate = String(m.hasChatTemplate);
    $('text-raw').checked = !m.hasChatTemplate;
    updateAskButton();
  } else if (m.type === 'answer') {
    if (pending === m.id) pending = null;
    render(m.result);
    updateAskButton();
  } else if (m.type === 'text') {
    if (pending === m.id) pending = null;
    renderText(m.result);
    updateAskButton();
  } else if (m.type === 'device-destroyed' || m.type === 'self-test') {
    debugCalls.get(m.id)?.resolve(m.type === 'self-test' ? m.report : m.destroyed);
    debugCalls.delete(m.id);
  } else if (m.type === 'error') {
    if (debugCalls.has(m.id)) {
      debugCalls.get(m.id).reject(new Error(m.message));
      debugCalls.delete(m.id);
      return;
    }
    if (m.id === undefined) {
      $('status-text').textContent = 'The model failed to load.';
      $('load-stage').dataset.stage = 'failed';
    }
    if (pending === m.id) pending = null;
    showError(m.message);
    updateAskButton();
  }
};
worker.onerror = (e) => showError(`worker failed: ${e.message}`);

async function setImage(file) {
  clearError();
  if (!file) return;
  // The decoder checks the file signature; the MIME type (empty on some systems) only
  // catches obvious mistakes early.
  if (file.type && !/^image\/(png|jpeg)$/.test(file.type)) {
    imageBytes = null;
    $('preview').hidden = true;
    $('drop-hint').textContent = 'Drop or paste a PNG or JPEG here, or click to choose one';
    showError(`${file.name} is not a PNG or JPEG image (it is ${file.type}); choose a PNG or JPEG`);
    return;
  }
  imageBytes = await file.arrayBuffer();
  const preview = $('preview');
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $('drop-hint').textContent = file.name;
  updateAskButton();
}

$('image-input').addEventListener('change', (e) => setImage(e.target.files[0]));
$('question').addEventListener('input', updateAskButton);

const drop = $('drop-zone');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('dragging'); });
drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('dragging');
  setImage(e.dataTransfer.files[0]);
});

// Paste an image anywhere on the page (a screenshot, a copied image).
document.addEventListener('paste', (e) => {
  const file = [...(e.clipboardData?.files ?? [])][0];
  if (file) {
    e.preventDefault();
    setImage(file);
  }
});

/** Sample questions `make web` wrote from the test split and its OOD versions: a click sets
 * the image and the question (the true answer stays hidden until asked). */
async function listSamples() {
  const box = $('samples');
  for (const set of ['test', 'ood']) {
    let lines = [];
    try {
      const r = await fetch(`samples/${set}/questions.jsonl`);
      if (!r.ok) continue;
      lines = (await r.text()).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    } catch {
      continue;
    }
    for (const s of lines) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'sample';
      b.dataset.set = set;
      b.title = `${s.question}${s.ood ? ` (${s.ood})` : ''}`;
      const img = document.createElement('img');
      img.src = `samples/${set}/${s.image}`;
      img.alt = s.ood ? `${set} sample, ${s.ood}` : `${set} sample`;
      b.append(img);
      b.addEventListener('click', async () => {
        const r = await fetch(img.src);
        const blob = await r.blob();
        await setImage(new File([blob], s.image, { type: 'image/png' }));
        $('question').value = s.question;
        updateAskButton();
      });
      box.append(b);
    }
  }
  box.hidden = box.childElementCount === 0;
}
listSamples();

$('ask-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if ($('ask').disabled) return;
  clearError();
  if (!imageBytes) {
    showError('Choose an image first (PNG or JPEG).');
    return;
  }
  if (!$('question').value.trim()) {
    showError('Type a question about the image first.');
    $('question').focus();
    return;
  }
  pending = nextId++;
  $('ask').disabled = true;
  worker.postMessage({
    type: 'ask',
    id: pending,
    // A copy, so the same image can be asked about again.
    image: imageBytes.slice(0),
    question: $('question').value,
    risk: Number($('risk').value),
  });
});

/** A text-only reply: the text itself (as text, never HTML) and its speed. */
function renderText(r) {
  const out = $('text-output');
  out.textContent = r.text;
  out.hidden = false;
  out.dataset.ids = r.ids.join(',');
  out.dataset.stopped = String(r.stopped);
  out.dataset.backend = r.backend;
  out.dataset.promptTokens = String(r.prompt_tokens);
  out.dataset.prefillTokensPerS = String(r.prefill_tokens_per_s);
  out.dataset.decodeTokensPerS = String(r.decode_tokens_per_s);
  $('text-stats').textContent = `${r.prompt_tokens} prompt tokens, ${r.new_tokens} new `
    + `${r.stopped ? '(stopped)' : '(token limit)'} on ${backendLabel(r.backend, r.adapter)}: `
    + `prefill ${r.prefill_ms.toFixed(0)} ms (${r.prefill_tokens_per_s.toFixed(1)} tokens/s), `
    + `decode ${r.decode_tokens_per_s.toFixed(1)} tokens/s.`;
  showBackend(r.backend, r.adapter, r.fallback);
}

$('text-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if ($('text-generate').disabled) return;
  clearError();
  const prompt = $('text-prompt').value;
  if (!prompt.trim()) {
    showError('Type a prompt first.');
    $('text-prompt').focus();
    return;
  }
  pending = nextId++;
  updateAskButton();
  worker.postMessage({
    type: 'generate',
    id: pending,
    prompt,
    maxNewTokens: Math.max(1, Math.min(512, Number($('text-max').value) || 48)),
    raw: $('text-raw').checked,
  });
});

const STAGES = {
  init: 'Starting WebAssembly',
  download: 'Downloading',
  verify: 'Verifying checksums',
  resume: 'Connection lost, resuming',
  upload: 'Building the model from the uploaded weights',
  compile: 'Compiling the WebGPU pipelines (a one-token warm-up answer)',
};
let loadStart = 0;

/** The progress bar: stage, bytes, speed. */
function showProgress(m) {
  const bar = $('load-progress');
  if (m.total > 0) {
    bar.max = m.total;
    bar.value = m.loaded;
  } else {
    bar.removeAttribute('value');
  }
  const stage = $('load-stage');
  stage.dataset.stage = m.stage;
  // Every stage this load went through, in order (the browser tests read it).
  const seen = (stage.dataset.stages || '').split(' ').filter(Boolean);
  if (seen[seen.length - 1] !== m.stage) stage.dataset.stages = [...seen, m.stage].join(' ');
  let text = STAGES[m.stage] || m.stage;
  if (m.stage === 'download' && m.total > 0 && m.source) {
    const secs = Math.max(1e-3, (performance.now() - loadStart) / 1000);
    text += ` ${formatBytes(m.loaded)} of ${formatBytes(m.total)} from the `
      + `${m.source === 'cache' ? 'browser cache' : 'network'} (${formatBytes(m.loaded / secs)}/s)`;
    if (m.tensors) text += `, ${m.tensors.uploaded}${m.tensors.total ? ` of ${m.tensors.total}` : ''} tensors on the backend`;
    if (m.tensors?.quantizeTotal) text += ` (${m.tensors.quantized} of ${m.tensors.quantizeTotal} linears quantized)`;
  } else if (m.stage === 'resume') {
    text += ` ${m.file} from byte ${m.loaded}`;
  }
  stage.textContent = text;
  $('status-text').textContent = `Loading the model (${currentVariant().name})…`;
}

/** A model the user named by URL or picked as a folder; null while a listed variant is chosen. */
let custom = null;

function currentVariant() {
  return custom || variants.find((v) => v.name === $('variant-choice').value) || variants[0];
}

/** Files the worker reads from a model folder (the rest of a checkpoint is not needed). */
const MODEL_FILES = ['config.json', 'tokenizer.json', 'model.safetensors', 'selector.safetensors',
  'calibration.json', 'tokenizer_config.json', 'chat_template.json', 'preprocessor_config.json'];

/**
 * The model named in "Another model": a URL (a package streams; a Hugging Face folder is
 * fetched, and quantized here with HQQ when bits are chosen) or a folder picked from disk,
 * whose files reach the worker as blob: URLs.
 */
function loadOtherModel() {
  const bits = Number($('model-bits').value) || undefined;
  const picked = [...$('model-folder').files];
  if (picked.length) {
    const urls = {};
    for (const f of picked) {
      if (MODEL_FILES.includes(f.name)) urls[f.name] = URL.createObjectURL(f);
    }
    const folder = picked[0].webkitRelativePath.split('/')[0] || 'folder';
    custom = { name: `folder ${folder}`, path: folder, kind: 'url', urls, bits };
  } else {
    const raw = $('model-url').value.trim();
    if (!raw) {
      showError('Type a model URL or pick a folder first.');
      return;
    }
    let href;
    try {
      href = new URL(raw, document.baseURI).href.replace(/\/+$/, '');
    } catch {
      showError(`"${raw}" is not a URL.`);
      return;
    }
    custom = { name: href, path: href, kind: 'url', bits };
  }
  loadModel();
}

function loadModel() {
  ready = false;
  loadStart = performance.now();
  $('model-status').classList.remove('ready');
  $('model-status').dataset.ready = 'false';
  $('status-text').textContent = 'Loading the model…';
  $('load-progress').value = 0;
  $('load-stage').dataset.stages = '';
  updateAskButton();
  const v = currentVariant();
  worker.postMessage({
    type: 'load',
    base: v.urls ? v.path : new URL(v.path, MODELS).href,
    kind: v.kind,
    from: v.from,
    bits: v.bits,
    urls: v.urls,
    backend: $('backend-choice').value,
  });
}

/** The variants `make web` wrote into models/index.json, each with its bytes. */
async function listVariants() {
  try {
    const r = await fetch(new URL('index.json', MODELS));
    if (r.ok) variants = (await r.json()).variants;
  } catch {
    // No index: only the f16 model directory.
  }
  // Any bit width without a package: the f16 files, quantized in this tab with HQQ
  // (data-free), confidence from the f16 Selector (src/quant/load_time.rs).
  // The f16 package is streamed and each linear quantized as it arrives (`from: 'package'`).
  const f16 = variants.find((v) => v.name === 'f16') || F16;
  for (const bits of [8, 4, 3, 2]) {
    variants.push({
      name: `hqq${bits}-tab`, path: f16.path, kind: 'browser-hqq', from: f16.kind, bits, bytes: f16.bytes,
      label: `hqq${bits}, quantized in this tab from f16`,
    });
  }
  const sel = $('variant-choice');
  sel.replaceChildren(...variants.map((v) => {
    const o = document.createElement('option');
    o.value = v.name;
    if (!v.bytes) o.textContent = v.label || v.name;
    else if (v.label) o.textContent = `${v.label} (${formatBytes(v.bytes)} download)`;
    else o.textContent = `${v.name} (${formatBytes(v.bytes)})`;
    o.dataset.bytes = String(v.bytes ?? '');
    return o;
  }));
  const want = PARAMS.get('variant');
  if (variants.some((v) => v.name === want)) sel.value = want;
}

const chosen = PARAMS.get('backend');
if ([...$('backend-choice').options].some((o) => o.value === chosen)) $('backend-choice').value = chosen;
$('backend-choice').addEventListener('change', loadModel);
$('variant-choice').addEventListener('change', () => {
  custom = null;
  loadModel();
});
$('model-load').addEventListener('click', loadOtherModel);

if (PARAMS.has('debug')) {
  // For the browser tests: destroy the WebGPU device, as a driver reset would. Resolves to
  // whether there was a device to destroy.
  const call = (type) => new Promise((resolve, reject) => {
    const id = nextId++;
    debugCalls.set(id, { resolve, reject });
    worker.postMessage({ type, id });
  });
  window.relvqaDebug = {
    loseDevice: () => call('lose-device'),
    // Every WGSL kernel against the CPU backend, in this browser (src/backend/parity.rs).
    selfTest: () => call('self-test'),
    // The packed int-N CPU kernels (wasm simd128) against their scalar reference.
    cpuKernelSelfTest: () => call('cpu-self-test'),
  };
}

// `?model=URL[&bits=4]` loads that model (as "Another model" does) instead of a listed variant.
listVariants().then(() => {
  if (!PARAMS.has('model')) return loadModel();
  $('model-url').value = PARAMS.get('model');
  if ([...$('model-bits').options].some((o) => o.value === PARAMS.get('bits'))) {
    $('model-bits').value = PARAMS.get('bits');
  }
  $('other-model').open = true;
  return loadOtherModel();
});
