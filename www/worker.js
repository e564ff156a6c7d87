// The Web Worker that owns the model: the page never blocks on inference.
// Messages in:  {type: 'load', base, kind, from, backend, bits, urls}  kind 'url' (a package if
//                 base has a manifest.json, else a directory; `urls`: a picked folder's files
//                 as blob: URLs), 'dir' (config.json + model.safetensors, streamed tensor
//                 by tensor), 'package' (manifest.json + shards) or 'browser-hqq' (the f16
//                 model quantized here with HQQ to `bits`, each linear as it arrives: a
//                 package when `from` is 'package', else the directory)
//               {type: 'ask', id, image, question, risk}
//               {type: 'generate', id, prompt, maxNewTokens, raw}  (the language model alone,
//                 through the checkpoint's chat template unless `raw`)
//               {type: 'lose-device', id}        (test hook: destroys the WebGPU device)
//               {type: 'self-test', id}          (every WGSL kernel against the CPU, here)
//               {type: 'cpu-self-test', id}      (the packed CPU kernels, simd128, against scalar)
// Messages out: {type: 'progress', stage, loaded, total, file, source, tensors}
//                 stage: 'init' (WebAssembly), 'download' (bytes, from 'network' or 'cache';
//                 each tensor is verified and put on the backend as its bytes arrive:
//                 `tensors` = {uploaded, total, quantized, quantizeTotal}; a folder's
//                 model.safetensors has no `total`), 'verify' (whole-shard sha256, tokenizer and
//                 Selector files), 'upload' (the model assembled from the weights on the
//                 backend), 'compile' (WebGPU pipelines, by a one-token warm-up answer), 'resume' (a
//                 cut download continues with a Range request); HQQ in this tab shows in
//                 'download' as `tensors.quantized` of `tensors.quantizeTotal`
//               {type: 'ready', backend, adapter, fallback, timings_ms, stats}
//                 stats: {network, cache}: shard bytes from each source; wasmMemory: bytes
//                 of wasm linear memory once loaded (its peak: it never shrinks),
//                 wasmMemoryAtInit: before this load
//                 hasChatTemplate: whether `generate` can render a chat prompt
//               {type: 'answer', id, result}    {type: 'device-destroyed', id, destroyed}
//               {type: 'text', id, result}      (`relvqa generate --json`'s object + where it ran)
//               {type: 'self-test', id, report}
//               {type: 'error', id?, message}
import init, {
  RelVqa, PackageLoader, FolderLoader, gpuSelfTest, cpuKernelSelfTest, wasmMemoryBytes,
} from './pkg/relvqa.js';
import { fetchBytes, streamPackage, GpuFailed } from './package-stream.js';

// A folder's small files, fetched first; its weights stream afterwards (loadFolder).
const REQUIRED = ['config.json', 'tokenizer.json'];
const WEIGHTS = 'model.safetensors';
// The image processor's settings: a SmolVLM that tiles images, Qwen2-VL's pixel limits.
const OPTIONAL = ['selector.safetensors', 'calibration.json', 'preprocessor_config.json'];
// The chat template `generate` renders prompts with (either file may hold it).
const CHAT = ['tokenizer_config.json', 'chat_template.json'];
const PROGRESS_EVERY_MS = 50;
// Each push copies its bytes into wasm memory, which never shrinks (see package-stream.js).
const PUSH_BYTES = 256 * 1024;

let model = null;
/** The last load message: a WebGPU failure after it loads the same model on the CPU. */
let loaded = null;
let loadTimings = {};

/** A model folder's small files: fetched from `base`, or from blob: URLs of a folder picked on disk. */
async function fetchDir(base, urls) {
  const names = [...REQUIRED, ...OPTIONAL, ...CHAT];
  const files = {};
  await Promise.all(names.map(async (name) => {
    if (urls && !urls[name]) {
      if (REQUIRED.includes(name)) throw new Error(`the folder ${base} has no ${name}`);
      files[name] = undefined;
    } else {
      files[name] = await fetchBytes(urls ? urls[name] : `${base}/${name}`, REQUIRED.includes(name));
    }
  }));
  return files;
}

/**
 * `model.safetensors` pushed into `loader` as `fetch` delivers it: each tensor is decoded
 * and put on the backend (quantized first with `bits`) the moment its last byte arrives, so
 * the tab never holds the file whole.
 */
async function streamWeights(loader, url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
  const reader = r.body.getReader();
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    for (let o = 0; o < value.length; o += PUSH_BYTES) loader.push(value.subarray(o, o + PUSH_BYTES));
    const now = performance.now();
    if (now - last > PROGRESS_EVERY_MS) {
      last = now;
      const p = loader.progress();
      postMessage({
        type: 'progress', stage: 'download', loaded: p.bytesReceived, total: p.bytesTotal,
        file: WEIGHTS, source: 'network',
        tensors: {
          uploaded: p.tensorsUploaded, quantized: p.quantized, quantizeTotal: p.quantizeTotal,
        },
      });
    }
  }
}

/**
 * A Hugging Face style folder (config.json, tokenizer.json, model.safetensors): the small
 * files, then the weights streamed onto `backend` (src/web_folder.rs); with `bits`, each of
 * the language model's linears is quantized with HQQ as it arrives. A GPU failure while
 * uploading restarts the load on the CPU, fetching the weights again.
 */
async function loadFolder({ base, urls, bits }, backend) {
  const files = await fetchDir(base, urls);
  const url = urls ? urls[WEIGHTS] : `${base}/${WEIGHTS}`;
  if (!url) throw new Error(`the folder ${base} has no ${WEIGHTS}`);
  let loader = await FolderLoader.open(files['config.json'], backend, bits);
  let fallback = null;
  try {
    try {
      await streamWeights(loader, url);
    } catch (err) {
      const gpu = loader.gpuFailed;
      if (!gpu) throw err;
      fallback = gpu;
      loader.free();
      loader = await FolderLoader.open(files['config.json'], 'cpu', bits);
      await streamWeights(loader, url);
    }
    postMessage({ type: 'progress', stage: 'upload', loaded: 0, total: 0 });
    // loadFolder takes the loader over (and frees it), whatever the outcome.
    const l = loader;
    loader = null;
    const m = await RelVqa.loadFolder(
      l, files['tokenizer.json'], files['selector.safetensors'], files['calibration.json'],
      files['tokenizer_config.json'], files['chat_template.json'], files['preprocessor_config.json'],
    );
    if (fallback) m.fallback = fallback;
    return m;
  } finally {
    loader?.free();
  }
}

/**
 * Stream the package's shards into a loader opened on `backend`: each tensor reaches the
 * backend as soon as it is verified. A GPU failure while uploading restarts the load on the
 * CPU; the shards already finished come from the Cache API then.
 */
async function loadPackage({ base, bits, manifest: known }, backend, stats) {
  const manifest = known ?? await fetchBytes(`${base}/manifest.json`, true);
  let loader = await PackageLoader.open(manifest, backend, bits);
  let fallback = null;
  try {
    let files;
    try {
      files = await streamPackage(loader, base, stats, postMessage);
    } catch (err) {
      if (!(err instanceof GpuFailed)) throw err;
      fallback = err.message;
      loader.free();
      loader = await PackageLoader.open(manifest, 'cpu', bits);
      files = await streamPackage(loader, base, stats, postMessage);
    }
    postMessage({ type: 'progress', stage: 'upload', loaded: 0, total: 0 });
    const {
      tokenizer, selector, calibration, tokenizerConfig, chatTemplate, preprocessor,
    } = files;
    // loadPackage takes the loader over (and frees it), whatever the outcome.
    const l = loader;
    loader = null;
    const m = await RelVqa.loadPackage(
      l, tokenizer, selector, calibration, tokenizerConfig, chatTemplate, preprocessor,
    );
    if (fallback) m.fallback = fallback;
    return m;
  } finally {
    loader?.free();
  }
}

async function open(msg, backend, stats) {
  if (msg.kind === 'package') return loadPackage({ base: msg.base }, backend, stats);
  if (msg.kind === 'browser-hqq' && msg.from === 'package') return loadPackage(msg, backend, stats);
  if (msg.kind === 'browser-hqq') return loadFolder(msg, backend);
  // A model named only by URL (the widget's `model` attribute, the page's "Another model"):
  // a package, which has a manifest, streams tensor by tensor; a plain Hugging Face directory
  // is fetched whole, and quantized here with HQQ when `bits` is set. A folder picked on disk
  // (`urls`) is always a directory.
  if (!msg.kind || msg.kind === 'url') {
    const manifest = msg.urls ? undefined : await fetchBytes(`${msg.base}/manifest.json`, false);
    if (manifest) return loadPackage({ base: msg.base, manifest }, backend, stats);
  }
  return loadFolder(msg, backend);
}

/** The `compile` stage: on WebGPU, one warm-up answer creates every pipeline. */
async function warmUp(m) {
  if (m.backend !== 'webgpu') return 0;
  postMessage({ type: 'progress', stage: 'compile', loaded: 0, total: 0 });
  return m.warmUp();
}

/**
 * WebGPU gave out (device lost, out of memory, a limit) in an answer or the warm-up: no host
 * copy of the weights is kept for this, so the model is loaded again on the CPU, from the
 * Cache API (packages) or the HTTP cache. Resolves to the milliseconds it took.
 */
async function reloadOnCpu(why) {
  const t = performance.now();
  model?.free();
  model = null;
  model = await open(loaded, 'cpu', { network: 0, cache: 0 });
  model.fallback = why;
  return performance.now() - t;
}

async function load(msg) {
  const t0 = performance.now();
  postMessage({ type: 'progress', stage: 'init', loaded: 0, total: 0 });
  await init();
  const t1 = performance.now();
  const wasmMemoryAtInit = wasmMemoryBytes();
  model?.free();
  model = null;
  loaded = msg;
  const stats = { network: 0, cache: 0 };
  model = await open(msg, msg.backend || 'auto', stats);
  const t2 = performance.now();
  let warm = 0;
  try {
    warm = await warmUp(model);
  } catch (err) {
    const why = model.gpuLost;
    if (!why) throw err;
    await reloadOnCpu(why);
  }
  loadTimings = { init: t1 - t0, fetch: t2 - t1 - model.loadMs, load: model.loadMs, compile: warm };
  stats.wasmMemoryAtInit = wasmMemoryAtInit;
  stats.wasmMemory = wasmMemoryBytes();
  postMessage({
    type: 'ready',
    backend: model.backend,
    adapter: model.adapter ?? null,
    fallback: model.fallback ?? null,
    timings_ms: loadTimings,
    stats,
    hasChatTemplate: model.hasChatTemplate,
  });
}

async function ask({ id, image, question, risk }) {
  if (!model) throw new Error('the model is not loaded yet');
  let result;
  let fallbackMs;
  try {
    result = await model.ask(new Uint8Array(image), question, risk);
  } catch (err) {
    const why = model.gpuLost;
    if (!why) throw err;
    fallbackMs = await reloadOnCpu(why);
    result = await model.ask(new Uint8Array(image), question, risk);
  }
  result.timings_ms = { ...loadTimings, ...result.timings_ms };
  if (fallbackMs !== undefined) result.timings_ms.fallback = fallbackMs;
  postMessage({ type: 'answer', id, result });
}

/** Text from the language model alone; a lost GPU retries on the CPU, as `ask` does. */
async function generate({ id, prompt, maxNewTokens, raw }) {
  if (!model) throw new Error('the model is not loaded yet');
  let result;
  try {
    result = await model.generate(prompt, maxNewTokens ?? 64, !!raw);
  } catch (err) {
    const why = model.gpuLost;
    if (!why) throw err;
    await reloadOnCpu(why);
    result = await model.generate(prompt, maxNewTokens ?? 64, !!raw);
  }
  postMessage({ type: 'text', id, result });
}

function loseDevice({ id }) {
  if (!model) throw new Error('the model is not loaded yet');
  postMessage({ type: 'device-destroyed', id, destroyed: model.loseDeviceForTest() });
}

async function selfTest({ id }) {
  await init();
  postMessage({ type: 'self-test', id, report: await gpuSelfTest() });
}

async function handle(msg) {
  try {
    if (msg.type === 'load') await load(msg);
    else if (msg.type === 'ask') await ask(msg);
    else if (msg.type === 'generate') await generate(msg);
    else if (msg.type === 'lose-device') loseDevice(msg);
    else if (msg.type === 'self-test') await selfTest(msg);
    else if (msg.type === 'cpu-self-test') {
      await init();
      postMessage({ type: 'self-test', id: msg.id, report: cpuKernelSelfTest() });
    }
    else throw new Error(`unknown message type ${msg.type}`);
  } catch (err) {
    postMessage({ type: 'error', id: msg.id, message: String(err && err.message ? err.message : err) });
  }
}

// One message at a time, in order: an answer awaits GPU readbacks, and a load or a device
// loss must not land in the middle of it.
let queue = Promise.resolve();
onmessage = (e) => {
  queue = queue.then(() => handle(e.data));
};
