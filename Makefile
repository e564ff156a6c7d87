# relvqa: two entry points for a fresh machine.
#   make demo  - build, then answer a sample test-split question with the shipped model
#   make test  - install what the tests need, then run every test and check
SHELL := /bin/bash
CARGO ?= cargo
MODEL ?= models/default
DEMO_DIR ?= target/demo

.PHONY: demo test setup test-native test-wasm lint

demo:
	$(CARGO) build --release
	./target/release/relvqa dataset --split test --limit 4 --out $(DEMO_DIR)
	@for i in 0 1 2 3; do \
	  q=$$(sed -n "$$((i+1))p" $(DEMO_DIR)/questions.jsonl | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["question"])'); \
	  a=$$(sed -n "$$((i+1))p" $(DEMO_DIR)/questions.jsonl | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["answer"])'); \
	  echo "image $(DEMO_DIR)/test_0000$$i.png  question: $$q  (true answer: $$a)"; \
	  ./target/release/relvqa ask --model $(MODEL) --image $(DEMO_DIR)/test_0000$$i.png --question "$$q" --json; \
	done

setup:
	rustup target add wasm32-unknown-unknown
	rustup component add clippy rustfmt

test: setup test-native test-wasm lint

test-native:
	$(CARGO) test --release

test-wasm:
	$(CARGO) build --lib --target wasm32-unknown-unknown --release

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
