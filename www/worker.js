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

const REQUIRED = ['config.json', 'tokenizer.json', 'model.safetensors'];
const OPTIONAL = ['selector.safetensors', 'calibration.json'];
// Shards that verified, keyed by URL + sha256, so a rebuilt package never reuses a stale shard.
const SHARD_CACHE = 'relvqa-shards-v1';
// A shard whose download keeps breaking is given up after this many Range resumes.
const MAX_RESUMES = 5;
const PROGRESS_EVERY_MS = 50;

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

/** A failure of the bytes themselves (checksum, length), as opposed to a broken connection. */
class VerifyError extends Error {}

/** Read `reader` to its end, handing each chunk to `onChunk`; a throw there is a VerifyError. */
async function pump(reader, onChunk) {
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    try {
      onChunk(value);
    } catch (err) {
      reader.cancel().catch(() => {});
      throw new VerifyError(err.message);
    }
  }
}

async function openCache() {
  try {
    return self.caches ? await caches.open(SHARD_CACHE) : undefined;
  } catch {
    return undefined; // e.g. storage disabled: load from the network every time
  }
}

/**
 * Stream shard `i` into `loader`, from the Cache API when it holds it, else from the network,
 * resuming a cut download with `Range: bytes=<received>-` so no byte is fetched twice. Only a
 * shard that verified is cached; a cached copy that fails verification is dropped.
 */
async function loadShard(loader, i, shard, base, cache, progress) {
  const url = `${base}/${shard.file}`;
  const key = `${url}?sha256=${shard.sha256}`;
  const cached = cache && await cache.match(key);
  if (cached) {
    try {
      await pump(cached.body.getReader(), (c) => { loader.push(i, c); progress('cache', c.length, shard.file); });
      loader.finishShard(i);
      return;
    } catch (err) {
      await cache.delete(key);
      throw new Error(`${shard.file} (browser cache): ${err.message} — the cached copy was dropped; `
        + 'reload to fetch it again');
    }
  }
  const parts = [];
  for (let attempt = 0; ; attempt++) {
    const start = loader.shardReceived(i);
    if (attempt > 0 && start >= shard.bytes) break;
    const r = await fetch(url, start > 0 ? { headers: { Range: `bytes=${start}-` } } : {});
    if (!r.ok) throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
    // A server without Range support answers 200 with the whole shard: skip what we have.
    let skip = start > 0 && r.status !== 206 ? start : 0;
    try {
      await pump(r.body.getReader(), (whole) => {
        const c = skip > 0 ? whole.subarray(Math.min(skip, whole.length)) : whole;
        skip -= whole.length - c.length;
        if (c.length === 0) return;
        loader.push(i, c);
        parts.push(c);
        progress('network', c.length, shard.file);
      });
      if (loader.shardReceived(i) >= shard.bytes) break;
      throw new Error(`the response ended after ${loader.shardReceived(i)} of ${shard.bytes} bytes`);
    } catch (err) {
      if (err instanceof VerifyError) {
        await cache?.delete(key);
        throw new Error(`${shard.file}: ${err.message}`);
      }
      if (attempt >= MAX_RESUMES) {
        throw new Error(`${shard.file}: the download failed ${attempt + 1} times, last: ${err.message}`);
      }
      postMessage({ type: 'progress', stage: 'resume', loaded: loader.shardReceived(i), total: shard.bytes, file: shard.file });
    }
  }
  postMessage({ type: 'progress', stage: 'verify', loaded: 0, total: 0, file: shard.file });
  try {
    loader.finishShard(i);
  } catch (err) {
    await cache?.delete(key);
    throw new Error(`${shard.file}: ${err.message}`);
  }
  // A Blob, not one big array: Chromium may keep it out of the JS heap until the cache takes it.
  await cache?.put(key, new Response(new Blob(parts), {
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(shard.bytes) },
  }));
}

async function loadPackage({ base, backend }, stats) {
  const loader = new PackageLoader(await fetchBytes(`${base}/manifest.json`, true));
  const shards = loader.shards();
  const total = shards.reduce((a, s) => a + s.bytes, 0);
  const cache = await openCache();
  let last = 0;
  let taken = false;
  const progress = (source, n, file) => {
    stats[source] += n;
    const now = performance.now();
    if (now - last < PROGRESS_EVERY_MS && stats.network + stats.cache < total) return;
    last = now;
    postMessage({ type: 'progress', stage: 'download', loaded: stats.network + stats.cache, total, file, source });
  };
  try {
    for (const [i, shard] of shards.entries()) {
      await loadShard(loader, i, shard, base, cache, progress);
    }
    postMessage({ type: 'progress', stage: 'verify', loaded: total, total });
    const extra = async (name) => (loader.hasFile(name) ? fetchBytes(`${base}/${name}`, true) : undefined);
    const [tokenizer, selector, calibration] = await Promise.all([
      fetchBytes(`${base}/${loader.tokenizerFile}`, true),
      extra('selector.safetensors'), extra('calibration.json'),
    ]);
    postMessage({ type: 'progress', stage: 'upload', loaded: total, total });
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
