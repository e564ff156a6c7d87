// The Web Worker that owns the model: the page never blocks on inference.
// Messages in:  {type: 'load', base, backend}   {type: 'ask', id, image, question, risk}
//               {type: 'lose-device', id}        (test hook: destroys the WebGPU device)
//               {type: 'self-test', id}          (every WGSL kernel against the CPU, here)
// Messages out: {type: 'progress', done, total, file}
//               {type: 'ready', backend, adapter, fallback, timings_ms}
//               {type: 'answer', id, result}    {type: 'device-destroyed', id, destroyed}
//               {type: 'self-test', id, report}
//               {type: 'error', id?, message}
import init, { RelVqa, gpuSelfTest } from './pkg/relvqa.js';

const REQUIRED = ['config.json', 'tokenizer.json', 'model.safetensors'];
const OPTIONAL = ['selector.safetensors', 'calibration.json'];

let model = null;
let loadTimings = {};

async function fetchBytes(url, required) {
  const r = await fetch(url);
  if (!r.ok) {
    if (!required && r.status === 404) return undefined;
    throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
  }
  return new Uint8Array(await r.arrayBuffer());
}

async function load({ base, backend }) {
  const t0 = performance.now();
  await init();
  const names = [...REQUIRED, ...OPTIONAL];
  const files = {};
  let done = 0;
  await Promise.all(names.map(async (name) => {
    files[name] = await fetchBytes(`${base}/${name}`, REQUIRED.includes(name));
    done += 1;
    postMessage({ type: 'progress', done, total: names.length, file: name });
  }));
  const t1 = performance.now();
  model?.free();
  model = null;
  model = await RelVqa.load(
    files['config.json'], files['tokenizer.json'], files['model.safetensors'],
    files['selector.safetensors'], files['calibration.json'], backend || 'auto',
  );
  loadTimings = { fetch: t1 - t0, load: performance.now() - t1 };
  postMessage({
    type: 'ready',
    backend: model.backend,
    adapter: model.adapter ?? null,
    fallback: model.fallback ?? null,
    timings_ms: loadTimings,
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
