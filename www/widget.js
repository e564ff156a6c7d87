// <relvqa-widget>: the page's ask-and-decide loop as a custom element another site embeds with
// one tag,
//
//   <script type="module" src="https://host/relvqa/widget.js"></script>
//   <relvqa-widget risk="0.05" backend="auto"></relvqa-widget>
//
// Attributes: `model` (URL of a package, streamed tensor by tensor, or of a Hugging Face model
// directory; default: models/<variant> beside this script), `variant` (default `f16`, the
// shipped model as a package; `hqq4`, `mbq4`, ... as `make web` builds them), `risk` (0.01, 0.05, 0.1 or
// 0.2; default 0.05), `backend` (auto, webgpu or cpu; default auto). Each widget owns a Web
// Worker (the page's worker.js) and a shadow root, so the host page's styles and scripts and
// the widget's cannot reach each other. Model output is inserted as text, never as HTML.
// Events: `relvqa-ready` {backend, adapter, fallback} and `relvqa-answer` (the answer object,
// the `relvqa ask --json` fields plus backend) bubble out of the element.

const HERE = new URL('.', import.meta.url);

const TEMPLATE = document.createElement('template');
TEMPLATE.innerHTML = `
<style>
  :host { display: block; font: 14px/1.4 system-ui, sans-serif; color: #1d2430;
          border: 1px solid #cfd6e0; border-radius: 8px; padding: 12px; max-width: 360px;
          background: #fff; }
  form { display: grid; gap: 6px; }
  input[type=text] { padding: 4px 6px; }
  button { justify-self: start; padding: 4px 12px; }
  .status { color: #5a6472; font-size: 12px; }
  .answer { font-size: 20px; font-weight: 600; margin-right: 8px; }
  .badge { font-size: 12px; padding: 1px 6px; border-radius: 10px; background: #d8f0dc; }
  .abstained .badge { background: #f7dede; }
  .abstained .answer { color: #8a8f98; text-decoration: line-through; }
  .bar { position: relative; height: 8px; background: #e6eaf0; border-radius: 4px; margin: 6px 0; }
  .fill { height: 100%; background: #3b7dd8; border-radius: 4px; }
  .mark { position: absolute; top: -3px; width: 2px; height: 14px; background: #1d2430; }
  .reason, .meta { font-size: 12px; color: #5a6472; margin: 2px 0; }
  .error { color: #a31d1d; font-size: 12px; }
</style>
<div part="status" class="status" data-ready="false">Loading the model…</div>
<form part="form">
  <input part="image" class="image" type="file" accept="image/png,image/jpeg" aria-label="Image">
  <input part="question" class="question" type="text" maxlength="500" autocomplete="off"
         placeholder="Ask about the image" aria-label="Question">
  <button part="ask" class="ask" type="submit" disabled>Ask</button>
</form>
<div part="result" class="result" hidden aria-live="polite">
  <span class="answer"></span><span class="badge"></span>
  <div class="bar" aria-hidden="true"><div class="fill"></div><div class="mark"></div></div>
  <p class="reason"></p>
  <p class="meta"></p>
</div>
<p part="error" class="error" role="alert" hidden></p>
`;

class RelvqaWidget extends HTMLElement {
  static get observedAttributes() {
    return ['model', 'variant', 'backend', 'risk'];
  }

  constructor() {
    super();
    this.attachShadow({ mode: 'open' }).append(TEMPLATE.content.cloneNode(true));
    this.worker = null;
    this.ready = false;
    this.image = null;
    this.nextId = 1;
    this.pending = null;
    const q = (sel) => this.shadowRoot.querySelector(sel);
    this.el = {
      status: q('.status'), form: q('form'), image: q('.image'), question: q('.question'),
      ask: q('.ask'), result: q('.result'), answer: q('.answer'), badge: q('.badge'),
      fill: q('.fill'), mark: q('.mark'), reason: q('.reason'), meta: q('.meta'),
      error: q('.error'),
    };
    this.el.image.addEventListener('change', () => this.setImage(this.el.image.files[0]));
    this.el.question.addEventListener('input', () => this.update());
    this.el.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.ask();
    });
  }

  connectedCallback() {
    if (!this.worker) this.load();
  }

  disconnectedCallback() {
    this.worker?.terminate();
    this.worker = null;
  }

  attributeChangedCallback(name, old, value) {
    // A new model or backend needs a new worker; the risk is read at each question.
    if (old !== value && this.worker && name !== 'risk') this.load();
  }

  get risk() {
    const r = Number(this.getAttribute('risk') ?? '0.05');
    return [0.01, 0.05, 0.1, 0.2].includes(r) ? r : 0.05;
  }

  modelUrl() {
    const model = this.getAttribute('model');
    if (model) return new URL(model, document.baseURI).href.replace(/\/$/, '');
    const variant = this.getAttribute('variant') || 'f16';
    return new URL(`models/${encodeURIComponent(variant)}`, HERE).href;
  }

  load() {
    this.worker?.terminate();
    this.ready = false;
    this.pending = null;
    this.el.status.dataset.ready = 'false';
    this.el.status.textContent = 'Loading the model…';
    this.worker = new Worker(new URL('worker.js', HERE), { type: 'module' });
    this.worker.onmessage = (e) => this.onMessage(e.data);
    this.worker.onerror = (e) => this.showError(`worker failed: ${e.message}`);
    this.worker.postMessage({
      type: 'load',
      base: this.modelUrl(),
      backend: this.getAttribute('backend') || 'auto',
    });
    this.update();
  }

  onMessage(m) {
    if (m.type === 'progress') {
      this.el.status.textContent = `Loading the model… (${m.stage}${m.total > 0 ? ` ${m.loaded}/${m.total}` : ''})`;
    } else if (m.type === 'ready') {
      this.ready = true;
      this.el.status.dataset.ready = 'true';
      this.el.status.dataset.backend = m.backend;
      this.el.status.textContent = m.backend === 'webgpu'
        ? `Ready on WebGPU (${m.adapter})` : 'Ready on the CPU';
      if (m.fallback) this.el.status.textContent += ` — WebGPU failed: ${m.fallback}`;
      this.dispatchEvent(new CustomEvent('relvqa-ready', {
        bubbles: true, composed: true,
        detail: { backend: m.backend, adapter: m.adapter, fallback: m.fallback },
      }));
      this.update();
    } else if (m.type === 'answer') {
      if (this.pending === m.id) this.pending = null;
      this.render(m.result);
      this.update();
    } else if (m.type === 'error') {
      if (this.pending === m.id) this.pending = null;
      if (m.id === undefined) this.el.status.textContent = 'The model failed to load.';
      this.showError(m.message);
      this.update();
    }
  }

  async setImage(file) {
    this.clearError();
    if (!file) return;
    if (file.type && !/^image\/(png|jpeg)$/.test(file.type)) {
      this.image = null;
      this.showError(`${file.name} is not a PNG or JPEG image`);
    } else {
      this.image = await file.arrayBuffer();
    }
    this.update();
  }

  update() {
    this.el.ask.disabled = !(this.ready && this.image && this.el.question.value.trim()
      && this.pending === null);
  }

  ask() {
    const question = this.el.question.value.trim();
    if (!this.ready || !this.image || !question || this.pending !== null) return;
    this.clearError();
    this.pending = this.nextId++;
    // A copy: the transfer empties the buffer, and the same image may be asked about again.
    const image = this.image.slice(0);
    this.worker.postMessage({ type: 'ask', id: this.pending, image, question, risk: this.risk },
      [image]);
    this.update();
  }

  render(r) {
    const el = this.el;
    el.result.classList.toggle('abstained', r.abstain);
    el.result.dataset.abstain = String(r.abstain);
    el.result.dataset.confidence = String(r.confidence);
    el.answer.textContent = r.answer;
    el.badge.textContent = r.abstain ? 'abstained' : 'answered';
    el.reason.textContent = r.reason;
    el.fill.style.width = `${Math.max(0, Math.min(1, r.confidence)) * 100}%`;
    const t = r.threshold;
    el.mark.style.display = t === null || t === undefined ? 'none' : 'block';
    if (t !== null && t !== undefined) el.mark.style.left = `${Math.max(0, Math.min(1, t)) * 100}%`;
    el.meta.textContent = `confidence ${r.confidence.toFixed(3)} (${r.confidence_source}), `
      + `${r.backend === 'webgpu' ? `WebGPU (${r.adapter})` : 'CPU'}`;
    el.result.hidden = false;
    this.dispatchEvent(new CustomEvent('relvqa-answer', { bubbles: true, composed: true, detail: r }));
  }

  showError(message) {
    this.el.error.textContent = message;
    this.el.error.hidden = false;
  }

  clearError() {
    this.el.error.hidden = true;
    this.el.error.textContent = '';
  }
}

if (!customElements.get('relvqa-widget')) customElements.define('relvqa-widget', RelvqaWidget);
