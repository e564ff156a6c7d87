# relvqa: two entry points for a fresh machine.
#   make demo  - build, then answer a sample test-split question with the shipped model
#   make test  - install what the tests need, then run every test and check
SHELL := /bin/bash
CARGO ?= cargo
MODEL ?= models/default

.PHONY: demo test setup test-native test-wasm lint easy-vqa lavapipe

demo:
	$(CARGO) build --release
	./target/release/relvqa demo --model $(MODEL)

setup:
	rustup target add wasm32-unknown-unknown
	rustup component add clippy rustfmt

test: setup test-native test-wasm lint

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

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
