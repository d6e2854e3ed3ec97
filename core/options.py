"""The flags commands share, one spelling per concept (docs/cli.md; tests/test_docs.py checks the vocabulary).

Old spellings stay as hidden aliases so earlier scripts keep working. A command adds the groups it needs:
:func:`add_endpoint_args` (how it calls an OpenAI-compatible endpoint) and :func:`add_answerer_args` (the
model that answers a benchmark: a local checkpoint or an endpoint).
"""
from __future__ import annotations

import argparse

from core.endpoint import DEFAULT_KEY_ENV
from core.errors import UsageError

TEMPLATES = ("dyadic", "chat")  # model.dyadic renders both
MAX_RETRIES = 6  # retries per request, in every command


def add_endpoint_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, concurrency: int = 8) -> None:
    """How a command calls an OpenAI-compatible endpoint."""
    p.add_argument("--concurrency", "--parallel", dest="concurrency", type=int, default=concurrency,
                   help=f"requests in flight (default {concurrency})")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES,
                   help=f"retries per request: 429, 5xx, timeouts (default {MAX_RETRIES})")
    p.add_argument("--api-key-env", default=DEFAULT_KEY_ENV, help="environment variable holding the key")


def add_answerer_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, served_default: str,
                      max_new_tokens: int) -> None:
    """The model that answers: a local checkpoint (batched model.generate) or an OpenAI-compatible endpoint."""
    p.add_argument("--model", "--model-path", dest="model",
                   help=f"local checkpoint (or 'smollm2'); with --base-url, the served model name "
                        f"(default {served_default})")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint instead of a local model")
    p.add_argument("--template", choices=TEMPLATES,
                   help="local model's prompt template (default: the checkpoint's, from its platolm_run.json, "
                        "else dyadic)")
    p.add_argument("--system", help="system prompt (default for local models: the checkpoint's trained prompt, "
                                    "else PlatoLM's; none remote)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--max-context", "--max-length", dest="max_context", type=int,
                   help="local model's context in tokens (default: the model's)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="prompts per local batch")


def check_answerer(args) -> None:
    if not args.model and not args.base_url:
        raise UsageError("give --model (a local checkpoint or 'smollm2'), or --base-url (an OpenAI-compatible "
                         "endpoint; --model then names the served model)")
