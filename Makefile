# relvqa: two entry points for a fresh machine.
#   make demo  - build the web page on the shipped model and serve it (prints the URL)
#   make demo-cli - build, then answer the first test questions in the terminal
#   make test  - install what the tests need, then run every test and check
#   make web   - build the web page into dist/web (wasm + page + f16 model + quantized packages);
#                make serve serves it
#   make e2e   - browser tests of the page (headless Chromium, npm playwright-core): CPU, WebGPU
#                (SwiftShader) and the fallbacks between them; `make test` runs them too
#   make bench-browser - real-size load, prefill and decode in headless Chromium (needs the GGUF)
SHELL := /bin/bash
CARGO ?= cargo
MODEL ?= models/default

.PHONY: bench-browser screenshot demo demo-cli wasm-bindgen-cli test setup test-native test-wasm lint easy-vqa lavapipe web serve e2e e2e-run setup-web

# The page (wasm + worker + the shipped model) on http://127.0.0.1:$(PORT)/ via `relvqa serve`
# (application/wasm, Range requests). Ctrl-C stops it.
demo: setup wasm-bindgen-cli web
	$(CARGO) build --release
	./target/release/relvqa serve --root $(WEB_DIR) --port $(PORT)

demo-cli:
	$(CARGO) build --release
	./target/release/relvqa demo --model $(MODEL)

setup:
	rustup target add wasm32-unknown-unknown
	rustup component add clippy rustfmt

# e2e-run last: it reuses the release binary `cargo test --release` built and the wasm that
# test-wasm built (`make web` only runs wasm-bindgen on it), so nothing is compiled twice.
test: setup test-native test-wasm lint setup-web e2e-run

# easy-VQA (PyPI, MIT): the external OOD test set, read by src/eval/ood/easyvqa.rs.
EASY_VQA_DIR ?= .cache/easy-vqa

easy-vqa: $(EASY_VQA_DIR)/easy_vqa/data/test/questions.json

$(EASY_VQA_DIR)/easy_vqa/data/test/questions.json:
	python3 -m pip install --quiet --no-deps --target $(EASY_VQA_DIR) easy-vqa==1.0

# lavapipe (Vulkan on the CPU) for tests/gpu_kernels.rs, which fail without a GPU adapter.
SUDO ?= $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
lavapipe:
	@dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y mesa-vulkan-drivers; }

test-native: easy-vqa lavapipe
	$(CARGO) test --release

test-wasm:
	$(CARGO) build --lib --target wasm32-unknown-unknown --release

# Clippy runs for wasm32 too: src/web.rs exists only there.
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --lib --target wasm32-unknown-unknown -- -D warnings

# The web page. wasm-bindgen's CLI must match the crate's pinned 0.2.130 exactly. wasm-opt is
# npm binaryen@132 from tools/wasm-opt's lock file: Debian's binaryen 108 writes modules Chromium
# refuses (DESIGN.md). It reads the wasm features to keep (bulk memory, SIMD, reference types,
# ...) from the module's target_features section, so no --enable flags are needed.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
WASM_OPT ?= tools/wasm-opt/node_modules/.bin/wasm-opt
# -O3: measured against -Oz in README.md (The web page).
WASM_OPT_FLAGS ?= -O3
WASM_BINDGEN ?= wasm-bindgen
WEB_DIR ?= dist/web
PORT ?= 8080
# The quantized packages the page offers beside f16 (built once, cached under
# $(TARGET_DIR)/variants with `relvqa eval --variants`, Selector included).
WEB_VARIANTS ?= hqq8,hqq4,hqq3,hqq2,mbq8,mbq4,mbq3,mbq2

# What `make web` and `make e2e` need beyond `make setup`: wasm-bindgen-cli 0.2.130 (without
# --locked: a locked install hits a yanked dependency), Debian's chromium (a browser download
# by a test tool fails here) and node/npm for the tests (node 20+: `node --test` options).
wasm-bindgen-cli:
	$(WASM_BINDGEN) --version 2>/dev/null | grep -q ' 0.2.130$$' || \
	  $(CARGO) install wasm-bindgen-cli --version 0.2.130

setup-web: setup wasm-bindgen-cli tools/wasm-opt/node_modules
	@test -x /usr/bin/chromium || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@command -v npm >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y nodejs npm; }

tools/wasm-opt/node_modules: tools/wasm-opt/package-lock.json
	cd tools/wasm-opt && npm ci --no-audit --no-fund
	touch $@

# easy-VQA goes into the page for the benchmark's OOD questions (4.4 MB, MIT).
web: easy-vqa tools/wasm-opt/node_modules
	$(CARGO) build --lib --target wasm32-unknown-unknown --release
	@$(WASM_BINDGEN) --version | grep -q ' 0.2.130$$' || \
	  { echo "need wasm-bindgen-cli 0.2.130: cargo install wasm-bindgen-cli --version 0.2.130"; exit 1; }
	@# wasm-opt takes about a minute and a half on 2 cores: skipped when pkg/ was made from
	@# this very module with these flags (pkg/.built-from records which).
	@in=$(TARGET_DIR)/wasm32-unknown-unknown/release/relvqa.wasm; \
	  from="$$(sha256sum $$in | cut -c1-64) $(WASM_OPT_FLAGS)"; \
	  if [ -f pkg/relvqa_bg.wasm ] && [ "$$(cat pkg/.built-from 2>/dev/null)" = "$$from" ]; then \
	    echo "pkg/ is up to date with $$in"; \
	  else \
	    set -ex; rm -f pkg/.built-from; \
	    $(WASM_BINDGEN) --target web --out-dir pkg $$in; \
	    $(WASM_OPT) $(WASM_OPT_FLAGS) pkg/relvqa_bg.wasm -o pkg/relvqa_bg.opt.wasm; \
	    mv pkg/relvqa_bg.opt.wasm pkg/relvqa_bg.wasm; \
	    echo "$$from" > pkg/.built-from; \
	  fi
	rm -rf $(WEB_DIR)
	mkdir -p $(WEB_DIR)/models
	cp www/index.html www/app.js www/worker.js www/style.css www/widget.js www/embed.html \
	  www/bench.html www/bench.js www/bench-worker.js www/package-stream.js $(WEB_DIR)/
	mkdir -p $(WEB_DIR)/easy-vqa
	cp -r $(EASY_VQA_DIR)/easy_vqa/data/answers.txt $(EASY_VQA_DIR)/easy_vqa/data/test $(WEB_DIR)/easy-vqa/
	cp -r pkg $(WEB_DIR)/pkg
	cp -r $(MODEL) $(WEB_DIR)/models/default
	$(CARGO) run --release --quiet -- dataset --split test --limit 6 --out $(WEB_DIR)/samples/test
	$(CARGO) run --release --quiet -- dataset --ood all --limit 6 --out $(WEB_DIR)/samples/ood
	$(CARGO) run --release --quiet -- web-models --model $(MODEL) --variants $(WEB_VARIANTS) \
	  --work $(TARGET_DIR)/variants --out $(WEB_DIR)/models

serve:
	$(CARGO) run --release -- serve --root $(WEB_DIR) --port $(PORT)

tests/e2e/node_modules: tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund
	touch $@

e2e: web tests/e2e/node_modules
	$(CARGO) build --release
	cd tests/e2e && npm test

# The README's screenshot of the page, taken by the WebGPU browser test after its last answer.
screenshot: web tests/e2e/node_modules
	cd tests/e2e && RELVQA_SCREENSHOT=$(CURDIR)/docs/screenshot-page.png \
	  node --test --test-name-pattern='on WebGPU like' page.test.mjs

# The browser tests alone, on an existing release binary (built by `cargo test --release` in
# `make test`, or `cargo build --release`).
e2e-run: web tests/e2e/node_modules
	@test -x $(TARGET_DIR)/release/relvqa || \
	  { echo "no $(TARGET_DIR)/release/relvqa: run cargo build --release (or make e2e)"; exit 1; }
	cd tests/e2e && time -p npm test

# Real-size numbers in headless Chromium (README, "Real weights"): the converted SmolLM2 checkpoint
# and its packages under $(REAL) (one folder per name in MODELS), generated from in the page on
# the CPU and WebGPU and compared with `relvqa generate` natively. Needs the GGUF (see README).
REAL ?= /tmp/real
MODELS ?= f16,hqq4,hqq3,hqq2
bench-browser: web tests/e2e/node_modules
	cd tests/e2e && node bench-real-size.mjs --root $(REAL) --models $(MODELS) --json $(REAL)/browser-bench.json
