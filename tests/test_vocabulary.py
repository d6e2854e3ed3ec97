"""One flag per concept (core.options.VOCABULARY), and the spellings commands had before still parse: every old
spelling gives the same parsed arguments as its flag now, through the command's real entry point (``python -m``,
run in-process and stopped right after parsing). tests/test_docs.py checks that no --help shows an old one."""
from __future__ import annotations

import argparse
import dataclasses
import runpy
import sys
import warnings

import pytest
from transformers import HfArgumentParser

from core.options import MAX_RETRIES


class Parsed(BaseException):
    """Carries what a command parsed, out past core.runner.command (which catches Exception)."""


def parse(monkeypatch, module: str, argv: list[str]) -> dict:
    """What ``python -m module argv`` parses, without running the command."""
    original, original_hf = argparse.ArgumentParser.parse_args, HfArgumentParser.parse_args_into_dataclasses

    def stop(self, *args, **kwargs):  # a sub-command's function, defined anew by each run, by its name
        parsed = vars(original(self, *args, **kwargs))
        raise Parsed({k: v.__qualname__ if callable(v) else v for k, v in parsed.items()})

    def stop_hf(self, *args, **kwargs):  # the trainer: its dataclasses' fields
        raise Parsed({f"{type(d).__name__}.{f.name}": getattr(d, f.name)
                      for d in original_hf(self, *args, **kwargs) if dataclasses.is_dataclass(d)
                      for f in dataclasses.fields(d)})

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    monkeypatch.setattr(HfArgumentParser, "parse_args_into_dataclasses", stop_hf)
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with warnings.catch_warnings(), pytest.raises(Parsed) as parsed:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
        runpy.run_module(module, run_name="__main__")
    return parsed.value.args[0]


# (command, the other flags it needs, an old spelling, its flag now)
RENAMED = [
    ("data.prepare", "clean --out o.json", "--in", "--data"),
    ("data.prepare", "seeds --data i.json --out o.json --source sharegpt", "--max-length", "--max-context"),
    ("model.sft_socratic.cli", "", "--model-path", "--model"),
    ("model.serve", "", "--model-path", "--model"),
    ("model.sft_platolm.train", "--data d --out o", "--model_name_or_path", "--model"),
    ("model.sft_platolm.train", "--model m --out o", "--data_path", "--data"),
    ("model.sft_platolm.train", "--model m --data d", "--output_dir", "--out"),
    ("model.sft_platolm.train", "--model m --data d --out o", "--model_max_length", "--max-length"),
    ("model.sft_platolm.train", "--model m --data d --out o", "--system_prompt", "--system"),
    ("model.sft_platolm.train", "--model m --data d --out o", "--per_device_train_batch_size",
     "--per-device-train-batch-size"),
    ("eval.mt_bench", "answer", "--model-id", "--name"),
    ("eval.mt_bench", "answer --name n", "--answer-file", "--out"),
    ("eval.mt_bench", "answer --name n", "--model-path", "--model"),
    ("eval.mt_bench", "answer --name n", "--max-length", "--max-context"),
    ("eval.mt_bench", "answer --name n", "--parallel", "--concurrency"),
    ("eval.mt_bench", "judge", "--output-file", "--out"),
    ("eval.mt_bench", "show", "--judgment-file", "--data"),
    ("eval.mt_bench", "show --data j.jsonl", "--model", "--model-list"),
    ("eval.alpaca_eval", "generate --name n --out o.json", "--instructions", "--data"),
    ("eval.alpaca_eval", "generate --out o.json", "--generator", "--name"),
    ("eval.alpaca_eval", "judge", "--model-outputs", "--data"),
    ("eval.alpaca_eval", "judge --data o.json", "--summary", "--out"),
    ("eval.alpaca_eval", "judge --data o.json", "--output-path", "--annotations-dir"),
    ("eval.question_quality", "--data c.json", "--out-dir", "--out"),
    ("eval.question_quality", "--data c.json", "--judge-sample", "--sample"),
    ("eval.simulator", "perplexity --data d.json", "--model-path", "--model"),
    ("eval.simulator", "perplexity --model m --data d.json", "--max-length", "--max-context"),
    ("eval.simulator", "termination --model m --data d.json", "--max-length", "--max-context"),
    ("eval.tables", "--out r.md", "--results", "--data"),
    ("eval.fetch_mt_bench", "", "--dest", "--out"),
    ("scripts.demo", "", "--base-model", "--model"),
    ("scripts.demo", "", "--sharegpt", "--data"),
    ("bench.bench_detector", "", "--json", "--out"),
    ("bench.bench_perplexity", "", "--max-length", "--max-context"),
]


@pytest.mark.parametrize("module, needs, old, new", RENAMED, ids=[f"{m} {old}" for m, _, old, _ in RENAMED])
def test_an_old_spelling_still_parses_as_its_flag(monkeypatch, module, needs, old, new):
    """``new 7`` and ``old 7`` give the same arguments (7 is a valid value of every flag above)."""
    now = parse(monkeypatch, module, [*needs.split(), new, "7"])
    assert parse(monkeypatch, module, [*needs.split(), old, "7"]) == now
    assert now != parse(monkeypatch, module, [*needs.split(), new, "8"])  # the flag reached the arguments


# every command with --max-retries, and the flags it needs
RETRYING = [("data.simulate", "--simulator u --num-sessions 1 --out o"), ("eval.mt_bench", "answer --name n"),
            ("eval.mt_bench", "judge"), ("eval.alpaca_eval", "generate --name n --out o"),
            ("eval.question_quality", "--data c"), ("eval.simulator", "diversity"),
            ("eval.simulator", "human-likeness"), ("eval.simulator", "role-adherence"),
            ("eval.simulator", "termination --data d")]


@pytest.mark.parametrize("module, needs", RETRYING, ids=[f"{m} {n.split()[0]}" for m, n in RETRYING])
def test_every_command_retries_as_often_by_default(monkeypatch, module, needs):
    assert parse(monkeypatch, module, needs.split())["max_retries"] == MAX_RETRIES
