"""The flags commands share, one spelling per concept (:data:`VOCABULARY`; docs/cli.md shows it and
tests/test_docs.py holds every command's ``--help`` to it).

A flag renamed to the vocabulary keeps its old spellings as hidden aliases (:func:`add_flag`), so earlier
scripts keep working. A command adds the groups it needs: :func:`add_endpoint_args` (how it calls an
OpenAI-compatible endpoint) and :func:`add_answerer_args` (the model that answers a benchmark: a local
checkpoint or an endpoint).
"""
from __future__ import annotations

import argparse

from core.endpoint import DEFAULT_KEY_ENV, MAX_RETRIES
from core.errors import UsageError

TEMPLATES = ("dyadic", "chat")  # model.dyadic renders both

# concept: (the one flag, other spellings no command shows as a flag of its own; a command that had one
# still parses it, hidden). --max-length is only a training or split length; a context budget is --max-context.
VOCABULARY = {
    "input file or folder": ("--data", ("--in", "--input", "--data-path", "--data_path", "--instructions",
                                        "--model-outputs", "--results", "--sharegpt")),
    "output file or folder": ("--out", ("--output", "--out-dir", "--output-dir", "--output_dir", "--dest",
                                        "--output-file", "--output-path", "--answer-file", "--summary")),
    "model (checkpoint, hub name, served name)": ("--model", ("--model-path", "--model-name-or-path",
                                                              "--model_name_or_path", "--base-model")),
    "tokenizer": ("--tokenizer", ("--tokenizer-path", "--tokenizer-name")),
    "context budget in tokens": ("--max-context", ("--context-length", "--max-context-length", "--window")),
    "training / split length in tokens (nothing else)": ("--max-length", ("--model-max-length",
                                                                          "--model_max_length", "--max-seq-length")),
    "requests or jobs in flight": ("--concurrency", ("--parallel", "--workers", "--num-workers")),
    "retries per request": ("--max-retries", ("--retries", "--num-retries")),
    "random seed": ("--seed", ("--random-seed",)),
    "system prompt": ("--system", ("--system-prompt", "--system_prompt")),
    "prompt template": ("--template", ("--prompt-template", "--chat-template")),
    "stop at the first bad record": ("--strict", ("--fail-fast",)),
    "print JSON": ("--json", ("--as-json",)),
    "row label / model name in results": ("--name", ("--model-id", "--generator", "--label")),
    "OpenAI-compatible endpoint": ("--base-url", ("--url", "--endpoint", "--api-base")),
    "judge model": ("--judge-model", ("--judge-name",)),
    "judge endpoint": ("--judge-base-url", ("--judge-url", "--judge-endpoint")),
}


def add_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, *old: str,
             **kwargs) -> argparse.Action:
    """``p.add_argument(flag, *old, **kwargs)``, with the old spellings hidden: ``--help``, usage lines and
    errors show ``flag`` alone, and every old spelling still parses (the parser keeps each spelling it was given)."""
    action = p.add_argument(flag, *old, **kwargs)
    action.option_strings = [flag]
    return action


def add_endpoint_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, concurrency: int = 8) -> None:
    """How a command calls an OpenAI-compatible endpoint."""
    add_flag(p, "--concurrency", "--parallel", type=int, default=concurrency,
             help=f"requests in flight (default {concurrency})")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES,
                   help=f"retries per request: 429, 5xx, timeouts (default {MAX_RETRIES})")
    p.add_argument("--api-key-env", default=DEFAULT_KEY_ENV, help="environment variable holding the key")


def add_answerer_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, served_default: str,
                      max_new_tokens: int) -> None:
    """The model that answers: a local checkpoint (batched model.generate) or an OpenAI-compatible endpoint."""
    add_flag(p, "--model", "--model-path", help=f"local checkpoint (or 'smollm2'); with --base-url, the served "
                                                f"model name (default {served_default})")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint instead of a local model")
    p.add_argument("--template", choices=TEMPLATES,
                   help="local model's prompt template (default: the checkpoint's, from its platolm_run.json, "
                        "else dyadic)")
    p.add_argument("--system", help="system prompt (default for local models: the checkpoint's trained prompt, "
                                    "else PlatoLM's; none remote)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    add_flag(p, "--max-context", "--max-length", type=int,
             help="local model's context in tokens (default: the model's)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="prompts per local batch")


def check_answerer(args) -> None:
    if not args.model and not args.base_url:
        raise UsageError("give --model (a local checkpoint or 'smollm2'), or --base-url (an OpenAI-compatible "
                         "endpoint; --model then names the served model)")
