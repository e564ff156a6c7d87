// The Web Worker that owns the model: the page never blocks on inference.
// Messages in:  {type: 'load', base, kind, backend, bits}  kind 'dir' (config.json +
//                 model.safetensors), 'package' (manifest.json + shards) or 'browser-hqq'
//                 (the f16 directory, quantized here with HQQ to `bits`)
//               {type: 'ask', id, image, question, risk}
//               {type: 'lose-device', id}        (test hook: destroys the WebGPU device)
//               {type: 'self-test', id}          (every WGSL kernel against the CPU, here)
// Messages out: {type: 'progress', stage, loaded, total, file, source}
//                 stage: 'compile' (WebAssembly), 'download' (bytes, from 'network' or
//                 'cache'; tensors are verified as their bytes arrive), 'verify' (whole-shard
//                 sha256, tokenizer and Selector files), 'upload' (building the model on the
//                 backend), 'resume' (a cut download continues with a Range request),
//                 'quantize' (HQQ in this tab: loaded/total layers)
//               {type: 'ready', backend, adapter, fallback, timings_ms, stats}
//                 stats: {network, cache}: shard bytes from each source
//               {type: 'answer', id, result}    {type: 'device-destroyed', id, destroyed}
//               {type: 'self-test', id, report}
//               {type: 'error', id?, message}
import init, { RelVqa, PackageLoader, gpuSelfTest } from './pkg/relvqa.js';
import { fetchBytes, streamPackage } from './package-stream.js';

const REQUIRED = ['config.json', 'tokenizer.json', 'model.safetensors'];
const OPTIONAL = ['selector.safetensors', 'calibration.json'];

let model = null;
let loadTimings = {};

async function fetchDir(base) {
  const names = [...REQUIRED, ...OPTIONAL];
  const files = {};
  let done = 0;
  await Promise.all(names.map(async (name) => {
    files[name] = await fetchBytes(`${base}/${name}`, REQUIRED.includes(name));
    done += 1;
    postMessage({ type: 'progress', stage: 'download', loaded: done, total: names.length, file: name });
  }));
  return files;
}

async function loadDir({ base, backend }) {
  const files = await fetchDir(base);
  postMessage({ type: 'progress', stage: 'upload', loaded: 0, total: 0 });
  return RelVqa.load(
    files['config.json'], files['tokenizer.json'], files['model.safetensors'],
    files['selector.safetensors'], files['calibration.json'], backend || 'auto',
  );
}

/** The f16 directory quantized in this tab with HQQ (src/quant/load_time.rs). */
async function loadQuantized({ base, backend, bits }) {
  const files = await fetchDir(base);
  postMessage({ type: 'progress', stage: 'quantize', loaded: 0, total: 0 });
  return RelVqa.loadQuantized(
    files['config.json'], files['tokenizer.json'], files['model.safetensors'],
    files['selector.safetensors'], files['calibration.json'], bits, backend || 'auto',
    (loaded, total) => postMessage({ type: 'progress', stage: 'quantize', loaded, total }),
  );
}

async function loadPackage({ base, backend }, stats) {
  const loader = new PackageLoader(await fetchBytes(`${base}/manifest.json`, true));
  let taken = false;
  try {
    const { tokenizer, selector, calibration } = await streamPackage(loader, base, stats, postMessage);
    // loadPackage takes the loader over (and frees it), whatever the outcome.
    taken = true;
    return await RelVqa.loadPackage(loader, tokenizer, selector, calibration, backend || 'auto');
  } finally {
    if (!taken) loader.free();
  }
}

async function load(msg) {
  const t0 = performance.now();
  postMessage({ type: 'progress', stage: 'compile', loaded: 0, total: 0 });
  await init();
  const t1 = performance.now();
  model?.free();
  model = null;
  const stats = { network: 0, cache: 0 };
  if (msg.kind === 'package') model = await loadPackage(msg, stats);
  else if (msg.kind === 'browser-hqq') model = await loadQuantized(msg);
  else model = await loadDir(msg);
  loadTimings = { compile: t1 - t0, fetch: performance.now() - t1 - model.loadMs, load: model.loadMs };
  postMessage({
    type: 'ready',
    backend: model.backend,
    adapter: model.adapter ?? null,
    fallback: model.fallback ?? null,
    timings_ms: loadTimings,
    stats,
  });
}

async function ask({ id, image, question, risk }) {
  if (!model) throw new Error('the model is not loaded yet');
  const result = await model.ask(new Uint8Array(image), question, risk);
  result.timings_ms = { ...loadTimings, ...result.timings_ms };
  postMessage({ type: 'answer', id, result });
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
    else if (msg.type === 'lose-device') loseDevice(msg);
    else if (msg.type === 'self-test') await selfTest(msg);
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
