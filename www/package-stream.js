// Streaming a package into a wasm `PackageLoader` (src/web_stream.rs), shared by the page's
// worker (worker.js) and the benchmark's (bench-worker.js): shards read from `response.body`
// chunk by chunk, each tensor verified and put on the loader's backend as its bytes arrive,
// the Cache API for shards that verified, Range resumes after a cut, and a clear error naming
// a corrupt shard (whose cache entry is dropped). Progress goes to `post`, as the workers'
// {type: 'progress', ...} messages.

// Shards that verified, keyed by URL + sha256, so a rebuilt package never reuses a stale shard.
const SHARD_CACHE = 'relvqa-shards-v1';
// A shard whose download keeps breaking is given up after this many Range resumes.
const MAX_RESUMES = 5;
const PROGRESS_EVERY_MS = 50;
// Each push copies its bytes into wasm memory, which never shrinks: a fetch or Cache API chunk
// can be a whole shard (64 MiB at most), so chunks are pushed in views of at most this size.
// Measured on mbq4 over WebGPU: pushing whole chunks grew wasm memory by 3.3 MB, these pieces
// by 1.0 MB (README.md, The web page).
const PUSH_BYTES = 256 * 1024;

/** `loader.push` in pieces of at most PUSH_BYTES (views, not copies, on the JS side). */
function push(loader, i, chunk) {
  for (let o = 0; o < chunk.length; o += PUSH_BYTES) loader.push(i, chunk.subarray(o, o + PUSH_BYTES));
}

export async function fetchBytes(url, required) {
  const r = await fetch(url);
  if (!r.ok) {
    if (!required && r.status === 404) return undefined;
    throw new Error(`cannot fetch ${url}: HTTP ${r.status}`);
  }
  return new Uint8Array(await r.arrayBuffer());
}

/** A failure of the bytes themselves (checksum, length), as opposed to a broken connection. */
class VerifyError extends Error {}

/**
 * The GPU failed while a tensor was uploaded (`loader.gpuFailed`): the bytes are fine, so no
 * cache entry is dropped; the caller loads again on the CPU. The message is the typed error.
 */
export class GpuFailed extends Error {}

/**
 * Read `reader` to its end, handing each chunk to `loader` through `onChunk`; a throw there is
 * a GpuFailed when the loader says the GPU failed, else a VerifyError.
 */
async function pump(reader, loader, onChunk) {
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    try {
      onChunk(value);
    } catch (err) {
      reader.cancel().catch(() => {});
      const gpu = loader.gpuFailed;
      throw gpu ? new GpuFailed(gpu) : new VerifyError(err.message);
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
async function loadShard(loader, i, shard, base, cache, progress, post) {
  const url = `${base}/${shard.file}`;
  const key = `${url}?sha256=${shard.sha256}`;
  const cached = cache && await cache.match(key);
  if (cached) {
    try {
      await pump(cached.body.getReader(), loader, (c) => { push(loader, i, c); progress('cache', c.length, shard.file); });
      loader.finishShard(i);
      return;
    } catch (err) {
      if (err instanceof GpuFailed) throw err;
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
      await pump(r.body.getReader(), loader, (whole) => {
        const c = skip > 0 ? whole.subarray(Math.min(skip, whole.length)) : whole;
        skip -= whole.length - c.length;
        if (c.length === 0) return;
        push(loader, i, c);
        parts.push(c);
        progress('network', c.length, shard.file);
      });
      if (loader.shardReceived(i) >= shard.bytes) break;
      throw new Error(`the response ended after ${loader.shardReceived(i)} of ${shard.bytes} bytes`);
    } catch (err) {
      if (err instanceof GpuFailed) throw err;
      if (err instanceof VerifyError) {
        await cache?.delete(key);
        throw new Error(`${shard.file}: ${err.message}`);
      }
      if (attempt >= MAX_RESUMES) {
        throw new Error(`${shard.file}: the download failed ${attempt + 1} times, last: ${err.message}`);
      }
      post({ type: 'progress', stage: 'resume', loaded: loader.shardReceived(i), total: shard.bytes, file: shard.file });
    }
  }
  post({ type: 'progress', stage: 'verify', loaded: 0, total: 0, file: shard.file });
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

/**
 * Stream every shard of the package at `base` into `loader` (made from its manifest.json),
 * counting bytes per source in `stats` ({network, cache}), then fetch the tokenizer and the
 * Selector, calibration and chat-template files the manifest lists. The caller builds the model and frees
 * the loader. Throws GpuFailed when the loader's GPU failed during an upload.
 */
export async function streamPackage(loader, base, stats, post) {
  const shards = loader.shards();
  const total = shards.reduce((a, s) => a + s.bytes, 0);
  const cache = await openCache();
  let last = 0;
  const progress = (source, n, file) => {
    stats[source] += n;
    const now = performance.now();
    if (now - last < PROGRESS_EVERY_MS && stats.network + stats.cache < total) return;
    last = now;
    const p = loader.progress();
    post({
      type: 'progress', stage: 'download', loaded: stats.network + stats.cache, total, file, source,
      tensors: {
        uploaded: p.tensorsUploaded, total: p.tensorsTotal, quantized: p.quantized, quantizeTotal: p.quantizeTotal,
      },
    });
  };
  for (const [i, shard] of shards.entries()) {
    await loadShard(loader, i, shard, base, cache, progress, post);
  }
  post({ type: 'progress', stage: 'verify', loaded: total, total });
  const extra = async (name) => (loader.hasFile(name) ? fetchBytes(`${base}/${name}`, true) : undefined);
  const [tokenizer, selector, calibration, tokenizerConfig, chatTemplate, preprocessor] = await Promise.all([
    fetchBytes(`${base}/${loader.tokenizerFile}`, true),
    extra('selector.safetensors'), extra('calibration.json'),
    extra('tokenizer_config.json'), extra('chat_template.json'),
    extra('preprocessor_config.json'),
  ]);
  return { tokenizer, selector, calibration, tokenizerConfig, chatTemplate, preprocessor };
}
