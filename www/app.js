// The page: reads the image and question, sends them to the worker, shows the decision.
// Everything the model says is inserted with textContent, never as HTML.

const MODEL_BASE = new URL('models/default', document.baseURI).href.replace(/\/$/, '');
// `?backend=auto|webgpu|cpu` preselects the backend; `?debug` exposes `window.relvqaDebug`.
const PARAMS = new URLSearchParams(document.location.search);

const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });

let imageBytes = null;
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

function updateAskButton() {
  $('ask').disabled = !(ready && imageBytes && $('question').value.trim() && pending === null);
}

const fmt = (x) => (x === null || x === undefined ? '—' : x.toFixed(3));

const TIMING_ORDER = ['fetch', 'load', 'preprocess', 'generate', 'decide'];

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
    $('load-progress').max = m.total;
    $('load-progress').value = m.done;
    $('status-text').textContent = `Loading the model… (${m.done}/${m.total} files)`;
  } else if (m.type === 'ready') {
    ready = true;
    $('model-status').classList.add('ready');
    $('model-status').dataset.ready = 'true';
    $('status-text').textContent = `Model ready on ${backendLabel(m.backend, m.adapter)} `
      + `(fetch ${m.timings_ms.fetch.toFixed(0)} ms, load ${m.timings_ms.load.toFixed(0)} ms).`;
    showBackend(m.backend, m.adapter, m.fallback);
    updateAskButton();
  } else if (m.type === 'answer') {
    if (pending === m.id) pending = null;
    render(m.result);
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
    if (m.id === undefined) $('status-text').textContent = 'The model failed to load.';
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
    showError(`${file.name} is not a PNG or JPEG image`);
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

$('ask-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if ($('ask').disabled) return;
  clearError();
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

function loadModel() {
  ready = false;
  $('model-status').classList.remove('ready');
  $('model-status').dataset.ready = 'false';
  $('status-text').textContent = 'Loading the model…';
  $('load-progress').value = 0;
  updateAskButton();
  worker.postMessage({ type: 'load', base: MODEL_BASE, backend: $('backend-choice').value });
}

const chosen = PARAMS.get('backend');
if ([...$('backend-choice').options].some((o) => o.value === chosen)) $('backend-choice').value = chosen;
$('backend-choice').addEventListener('change', loadModel);

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
  };
}

loadModel();
