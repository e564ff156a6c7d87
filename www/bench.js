// The benchmark page: runs bench-worker.js, shows the metrics as a table and SVG plots, and
// exports them as JSON and CSV. Everything shown is text (textContent) or built SVG nodes.
const $ = (id) => document.getElementById(id);
const PARAMS = new URLSearchParams(document.location.search);
const SVG = 'http://www.w3.org/2000/svg';
const RISKS = ['1', '5', '10', '20'];
const COSTS = ['1', '10', '100'];

/** The variants `make web` wrote into models/index.json (f16 alone without it). */
let variants = [{ name: 'f16', path: 'default', kind: 'dir', bytes: null }];
async function listVariants() {
  try {
    const r = await fetch('models/index.json');
    if (r.ok) variants = (await r.json()).variants;
  } catch {
    // No index: only the f16 model directory.
  }
  $('model').replaceChildren(...variants.map((v) => {
    const o = document.createElement('option');
    o.value = v.name;
    o.textContent = v.bytes ? `${v.name} (${(v.bytes / 2 ** 20).toFixed(2)} MiB)` : v.name;
    return o;
  }));
}

async function init() {
  await listVariants();
  for (const k of ['n', 'val', 'percents', 'backend', 'model']) {
    if (PARAMS.has(k)) $(k).value = PARAMS.get(k);
  }
  if (PARAMS.has('autorun')) run();
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
}

/** One row per (mixture, estimator): the columns of the table and of the CSV. */
function tableRows(result) {
  const rows = [];
  for (const m of result.mixtures) {
    for (const [est, e] of Object.entries(m.estimators)) {
      const row = {
        model: result.model, backend: result.backend, bytes: result.bytes,
        ood_percent: m.ood_percent, n: m.n, accuracy: m.accuracy, estimator: est, auc: e.auc,
      };
      for (const r of RISKS) row[`c_at_${r}`] = e.coverage_at_risk[r]?.coverage ?? null;
      for (const c of COSTS) row[`phi_${c}`] = e.phi[c]?.phi ?? null;
      row.ece = e.ece;
      row.latency_ms = result.latency_ms_median;
      rows.push(row);
    }
  }
  return rows;
}

const fmt = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : String(v ?? '—'));

function renderTable(rows) {
  const cols = Object.keys(rows[0] ?? {});
  const head = document.createElement('tr');
  for (const c of cols) {
    const th = document.createElement('th');
    th.textContent = c;
    head.append(th);
  }
  $('bench-table').tHead.replaceChildren(head);
  const body = rows.map((r) => {
    const tr = document.createElement('tr');
    for (const c of cols) {
      const td = document.createElement('td');
      td.textContent = fmt(r[c]);
      td.dataset.col = c;
      tr.append(td);
    }
    tr.dataset.ood = String(r.ood_percent);
    tr.dataset.estimator = r.estimator;
    return tr;
  });
  $('bench-table').tBodies[0].replaceChildren(...body);
}

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A small line/scatter chart: series of [x, y] in [0, xmax] x [0, ymax]. */
function chart(series, { xlabel, ylabel, xmax = 1, ymax = 1 }) {
  const W = 420, H = 260, L = 48, B = 36, T = 10, R = 120;
  const svg = svgEl('svg', { width: W + R, height: H, viewBox: `0 0 ${W + R} ${H}`, role: 'img' });
  const x = (v) => L + (v / xmax) * (W - L - 10);
  const y = (v) => H - B - (v / ymax) * (H - B - T);
  svg.append(svgEl('line', { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: '#444' }));
  svg.append(svgEl('line', { x1: L, y1: T, x2: L, y2: H - B, stroke: '#444' }));
  for (let i = 0; i <= 4; i += 1) {
    svg.append(svgEl('text', { x: x((xmax * i) / 4), y: H - B + 14, 'font-size': 10, 'text-anchor': 'middle' },
      fmt(Math.round(((xmax * i) / 4) * 1000) / 1000)));
    svg.append(svgEl('text', { x: L - 4, y: y((ymax * i) / 4) + 3, 'font-size': 10, 'text-anchor': 'end' },
      fmt(Math.round(((ymax * i) / 4) * 1000) / 1000)));
  }
  svg.append(svgEl('text', { x: (L + W) / 2, y: H - 4, 'font-size': 11, 'text-anchor': 'middle' }, xlabel));
  svg.append(svgEl('text', { x: 12, y: (T + H - B) / 2, 'font-size': 11, transform: `rotate(-90 12 ${(T + H - B) / 2})`, 'text-anchor': 'middle' }, ylabel));
  const colors = ['#3b7dd8', '#d8743b', '#2f9e5b', '#9b3bd8', '#c9a227', '#555', '#d83b6e', '#3bc9d8', '#7a5c3b', '#1d2430'];
  series.forEach((s, i) => {
    const color = colors[i % colors.length];
    const pts = s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ');
    svg.append(s.points.length > 1
      ? svgEl('polyline', { points: pts, fill: 'none', stroke: color, 'stroke-width': 1.5 })
      : svgEl('circle', { cx: x(s.points[0][0]), cy: y(s.points[0][1]), r: 4, fill: color }));
    svg.append(svgEl('text', { x: W + 2, y: T + 12 + i * 14, 'font-size': 10, fill: color }, s.name));
  });
  return svg;
}

function renderPlots(result) {
  const rc = [];
  let maxRisk = 0.05;
  for (const m of result.mixtures) {
    for (const [est, curve] of Object.entries(m.curves)) {
      const points = curve.map((p) => [p.coverage, p.risk]);
      for (const [, r] of points) maxRisk = Math.max(maxRisk, r);
      rc.push({ name: `${m.ood_percent}% OOD ${est}`, points });
    }
  }
  $('plot-rc').replaceChildren(chart(rc, { xlabel: 'coverage', ylabel: 'risk', ymax: Math.min(1, maxRisk * 1.1) }));
  const id = result.mixtures.find((m) => m.ood_percent === 0) ?? result.mixtures[0];
  const mb = result.bytes / 2 ** 20;
  const c5 = id?.estimators.selector?.coverage_at_risk['5']?.coverage
    ?? id?.estimators.maxprob?.coverage_at_risk['5']?.coverage ?? 0;
  $('plot-bytes').replaceChildren(chart([
    { name: 'accuracy', points: [[mb, id?.accuracy ?? 0]] },
    { name: 'C@5%', points: [[mb, c5]] },
  ], { xlabel: 'MiB', ylabel: 'accuracy / coverage', xmax: Math.max(1, Math.ceil(mb * 1.25)) }));
}

function exportLinks(result, rows) {
  const { rows: _answers, ...summary } = result;
  const json = new Blob([JSON.stringify({ ...summary, answers: result.rows }, null, 2)], { type: 'application/json' });
  const cols = Object.keys(rows[0] ?? {});
  const csv = [cols.join(','), ...rows.map((r) => cols.map((c) => JSON.stringify(r[c] ?? '')).join(','))].join('\n');
  $('export-json').href = URL.createObjectURL(json);
  $('export-csv').href = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
}

function run() {
  $('error').hidden = true;
  delete $('bench-status').dataset.done;
  $('run').disabled = true;
  const percents = $('percents').value.split(',').map((s) => Number(s.trim()));
  if (percents.some((p) => !Number.isInteger(p) || p < 0 || p > 100)) {
    showError('OOD shares must be whole percentages from 0 to 100, separated by commas');
    $('run').disabled = false;
    return;
  }
  const worker = new Worker(new URL('bench-worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = (e) => {
    const m = e.data;
    if (m.type === 'progress') {
      // Questions report {done, total}; a streamed package reports {loaded, total} in bytes.
      const done = m.done ?? m.loaded ?? 0;
      const total = m.total || 1;
      $('bench-status').textContent = `${m.stage}: ${done}/${m.total ?? 0}`;
      $('bench-progress').max = total;
      $('bench-progress').value = Math.min(done, total);
    } else if (m.type === 'done') {
      const rows = tableRows(m.result);
      window.relvqaBench = { result: m.result, rows };
      $('bench-summary').textContent = `${m.result.model} on ${m.result.backend === 'webgpu'
        ? `WebGPU (${m.result.adapter})` : 'the CPU'}: ${m.result.n} test and ${m.result.val} val `
        + `questions, ${(m.result.bytes / 2 ** 20).toFixed(2)} MiB, median ${m.result.latency_ms_median.toFixed(0)} ms a question.`;
      renderTable(rows);
      renderPlots(m.result);
      exportLinks(m.result, rows);
      $('bench-result').hidden = false;
      $('bench-status').textContent = 'Done.';
      $('bench-status').dataset.done = 'true';
      $('run').disabled = false;
      worker.terminate();
    } else if (m.type === 'error') {
      showError(m.message);
      $('bench-status').textContent = 'Failed.';
      $('bench-status').dataset.done = 'error';
      $('run').disabled = false;
      worker.terminate();
    }
  };
  const v = variants.find((x) => x.name === $('model').value) || variants[0];
  worker.postMessage({
    type: 'run',
    base: new URL(`models/${v.path}`, document.baseURI).href.replace(/\/$/, ''),
    name: v.name,
    kind: v.kind,
    backend: $('backend').value,
    n: Number($('n').value),
    val: Number($('val').value),
    percents,
  });
}

$('bench-form').addEventListener('submit', (e) => {
  e.preventDefault();
  run();
});
init();
