// The browser benchmark's worker: answers the val, ID-test and OOD-test questions that
// `relvqa eval --out` answers, then computes the report's metrics with the crate's own code
// (src/web_bench.rs). The page never blocks.
// Messages in:  {type: 'run', base, name, kind, backend, n, val, percents}
//                 kind 'dir' (a model directory) or 'package' (streamed, as the page does)
// Messages out: {type: 'progress', stage, done, total}
//               {type: 'done', result}   {type: 'error', message}
import init, { BenchSession, PackageLoader, benchReport } from './pkg/relvqa.js';
import { fetchBytes, streamPackage } from './package-stream.js';

const FILES = ['config.json', 'tokenizer.json', 'model.safetensors'];

async function openDir(base, backend) {
  const files = await Promise.all(FILES.map((f) => fetchBytes(`${base}/${f}`, true)));
  const selector = await fetchBytes(`${base}/selector.safetensors`, false);
  const bytes = files.reduce((s, f) => s + f.length, 0) + (selector?.length ?? 0);
  const session = await BenchSession.load(files[0], files[1], files[2], selector, backend);
  return { session, bytes };
}

async function openPackage(base, backend) {
  // The loader puts each tensor on `backend` as it arrives; loadPackage refuses a loader
  // that fell back to another backend (a benchmark says what it measured).
  const loader = await PackageLoader.open(await fetchBytes(`${base}/manifest.json`, true), backend);
  const stats = { network: 0, cache: 0 };
  let taken = false;
  try {
    const { tokenizer, selector } = await streamPackage(loader, base, stats, postMessage);
    const bytes = stats.network + stats.cache + tokenizer.length + (selector?.length ?? 0);
    taken = true;
    const session = await BenchSession.loadPackage(loader, tokenizer, selector, backend);
    return { session, bytes };
  } finally {
    if (!taken) loader.free();
  }
}

/** easy-VQA's test split (copied into the page by `make web`), for the OOD questions. */
async function loadEasyVqa(session) {
  const base = new URL('easy-vqa/', self.location.href);
  const answers = new TextDecoder().decode(await fetchBytes(new URL('answers.txt', base), true));
  const questions = await fetchBytes(new URL('test/questions.json', base), true);
  const ids = [...new Set(JSON.parse(new TextDecoder().decode(questions)).map((q) => q[2]))];
  const images = new Array(ids.length);
  let done = 0;
  // A few requests at a time: a thousand small files.
  const next = { i: 0 };
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next.i < ids.length) {
      const k = next.i++;
      images[k] = await fetchBytes(new URL(`test/images/${ids[k]}.png`, base), true);
      done += 1;
      if (done % 100 === 0 || done === ids.length) {
        postMessage({ type: 'progress', stage: 'easy-VQA images', done, total: ids.length });
      }
    }
  }));
  session.setEasyVqa(answers, questions, new Uint32Array(ids), images);
}

async function run({ base, name, kind, backend, n, val, percents }) {
  await init();
  const t0 = performance.now();
  const { session, bytes } = kind === 'package'
    ? await openPackage(base, backend) : await openDir(base, backend);
  const loadMs = performance.now() - t0;
  await loadEasyVqa(session);
  const rows = { val: [], id: [], ood: [] };
  const latencies = [];
  for (const [set, count] of [['val', val], ['id', n], ['ood', n]]) {
    for (let i = 0; i < count; i += 1) {
      const t = performance.now();
      rows[set].push(await session.answer(set, i));
      latencies.push(performance.now() - t);
      postMessage({ type: 'progress', stage: `${set} questions`, done: i + 1, total: count });
    }
  }
  const mixtures = JSON.parse(benchReport(rows.val, rows.id, rows.ood, new Uint32Array(percents)));
  latencies.sort((a, b) => a - b);
  postMessage({
    type: 'done',
    result: {
      model: name ?? base,
      backend: session.backend,
      adapter: session.adapter ?? null,
      bytes,
      n,
      val,
      load_ms: loadMs,
      latency_ms_median: latencies[Math.floor(latencies.length / 2)] ?? null,
      val_accuracy: rows.val.reduce((s, r) => s + r.acc, 0) / Math.max(1, rows.val.length),
      mixtures,
      rows,
    },
  });
  session.free();
}

onmessage = async (e) => {
  try {
    if (e.data.type === 'run') await run(e.data);
    else throw new Error(`unknown message type ${e.data.type}`);
  } catch (err) {
    postMessage({ type: 'error', message: String(err && err.message ? err.message : err) });
  }
};
