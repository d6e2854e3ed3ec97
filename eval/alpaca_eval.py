"""AlpacaEval: write a model's outputs in AlpacaEval's format, then score them with the ``alpaca_eval`` package.

``generate`` answers the 805 AlpacaEval instructions (from the hub when online, or ``--instructions
FILE``: a JSON array or JSONL of ``{"instruction", "dataset"?}``) with a local model or any
OpenAI-compatible endpoint and writes ``[{"instruction", "output", "generator", "dataset"}]``;
it resumes where it stopped. ``judge`` runs ``alpaca_eval.evaluate`` with the annotator you name and
writes a one-line summary for ``eval.tables``. ``alpaca_eval`` is not a dependency of this project
(it pins ``setuptools<81``): install it into its own environment, e.g.
``pip install 'setuptools<81' alpaca-eval``. Its reference outputs and its length-controlled win rate
come from the Hugging Face hub; offline, pass ``--reference-outputs`` and ``--metric win_rate``.

Usage::

    python -m eval.alpaca_eval generate --model-path runs/platolm --generator platolm-7b --out runs/alpaca/platolm.json
    python -m eval.alpaca_eval generate --base-url http://127.0.0.1:8000/v1 --model platolm --generator platolm-7b \\
        --instructions alpaca_eval.json --out runs/alpaca/platolm.json
    OPENAI_API_KEY=... python -m eval.alpaca_eval judge --model-outputs runs/alpaca/platolm.json \\
        --annotators-config alpaca_eval_gpt4 --summary results/alpaca_eval/platolm-7b.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.judge_client import DEFAULT_KEY_ENV, SetupError, make_client, run_command, run_jobs
from model.conversation import BadRecord, atomic_write, read_json_records, write_json_array

HUB_REPO, HUB_FILE = "tatsu-lab/alpaca_eval", "alpaca_eval.json"
INSTALL_HINT = "pip install 'setuptools<81' alpaca-eval (best in its own virtual environment)"


def load_instructions(path: str | None) -> list[dict]:
    """[{"instruction", "dataset"?}] from a file, or AlpacaEval's 805 from the hub."""
    if path is None:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset")
        except Exception as err:
            raise SetupError(f"cannot fetch {HUB_REPO}/{HUB_FILE} from the hub ({type(err).__name__}); "
                             f"offline, pass --instructions FILE") from None
    if not Path(path).is_file():
        raise SetupError(f"instructions file {path} not found")
    out = []
    try:
        for i, rec in enumerate(read_json_records(path)):
            if not isinstance(rec, dict) or not isinstance(rec.get("instruction"), str):
                raise SetupError(f"{path}: record {i}: no 'instruction' string")
            out.append({"instruction": rec["instruction"], "dataset": rec.get("dataset", "")})
    except BadRecord as err:
        raise SetupError(str(err)) from None
    return out


def cmd_generate(args) -> int:
    if bool(args.model_path) == bool(args.base_url):
        raise SetupError("give either --model-path (local model) or --base-url (OpenAI-compatible endpoint)")
    items = load_instructions(args.instructions)[: args.limit]
    out = Path(args.out)
    done = {}
    if out.is_file():
        done = {r["instruction"]: r for r in read_json_records(out) if r.get("generator") == args.generator}
    todo = [it for it in items if it["instruction"] not in done]
    print(f"{len(items) - len(todo)} of {len(items)} instructions already answered in {out}", file=sys.stderr)

    def save():
        write_json_array(out, (done[it["instruction"]] for it in items if it["instruction"] in done))

    def record(item, text):
        return {"instruction": item["instruction"], "output": text.strip(), "generator": args.generator,
                "dataset": item["dataset"]}

    if todo and args.model_path:
        from tqdm import tqdm

        from model.conversation import GPT, HUMAN, Turn
        from model.generate import Generator

        gen = Generator(args.model_path, template=args.template)
        for start in tqdm(range(0, len(todo), args.batch_size), desc="batches", file=sys.stderr, disable=None):
            chunk = todo[start:start + args.batch_size]
            outs = gen.generate([[Turn(HUMAN, it["instruction"])] for it in chunk], role=GPT, system=args.system,
                                temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, seed=args.seed)
            for it, c in zip(chunk, outs):
                done[it["instruction"]] = record(it, c.text)
            save()  # the whole file, atomically, after every batch
    elif todo:
        client = make_client(args.base_url, args.api_key_env, args.max_retries)

        def job(item):
            async def run():
                messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                           [{"role": "user", "content": item["instruction"]}]
                return item, await client.chat(args.model or args.generator, messages, args.temperature,
                                        args.max_new_tokens)
            return run

        def keep(result):
            item, text = result
            done[item["instruction"]] = record(item, text)
            if len(done) % args.batch_size == 0:
                save()

        failures = run_jobs([job(it) for it in todo], keep, args.parallel, desc="outputs")
        save()
        if failures:
            print(f"error: {len(failures)} instructions failed (see above); run again to resume", file=sys.stderr)
            return 1
    print(f"{len(done)} outputs in {out}", file=sys.stderr)
    return 0


def cmd_judge(args) -> int:
    try:
        from alpaca_eval import main as alpaca_main
    except ImportError as err:
        raise SetupError(f"the alpaca_eval package is not available ({err}); {INSTALL_HINT}") from None
    if not Path(args.model_outputs).is_file():
        raise SetupError(f"model outputs {args.model_outputs} not found (run `eval.alpaca_eval generate`)")
    kwargs = dict(model_outputs=args.model_outputs, annotators_config=args.annotators_config,
                  output_path=args.output_path, is_return_instead_of_print=True,
                  fn_metric="get_length_controlled_winrate" if args.metric == "length_controlled" else "get_winrate")
    if args.reference_outputs:
        kwargs["reference_outputs"] = args.reference_outputs
    if args.name:
        kwargs["name"] = args.name
    try:
        leaderboard, _ = alpaca_main.evaluate(**kwargs)
    except OSError as err:  # hub downloads (reference outputs, length-control weights) fail offline
        raise SetupError(f"alpaca_eval could not get a file it needs ({err}); offline, pass --reference-outputs "
                         f"and --metric win_rate") from None
    name = args.name or leaderboard.index[0]
    row = leaderboard.loc[name]

    def get(col):
        return round(float(row[col]), 4) if col in row and row[col] == row[col] else None

    summary = {"model": str(name), "annotator": args.annotators_config, "win_rate": get("win_rate"),
               "standard_error": get("standard_error"), "lc_win_rate": get("length_controlled_winrate"),
               "lc_standard_error": get("lc_standard_error"), "n_total": get("n_total"),
               "avg_length": get("avg_length")}
    if args.summary:
        atomic_write(args.summary, lambda f: f.write(json.dumps(summary, indent=1) + "\n"))
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.alpaca_eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write model outputs in AlpacaEval's format (resumable)")
    g.add_argument("--instructions", help="JSON/JSONL of {instruction, dataset?} (default: the hub's 805)")
    g.add_argument("--generator", required=True, help="model name written into the outputs")
    g.add_argument("--out", required=True, help="output JSON array")
    g.add_argument("--model-path", help="local checkpoint (or 'smollm2')")
    g.add_argument("--template", default="dyadic", choices=("dyadic", "chat"))
    g.add_argument("--base-url", help="OpenAI-compatible endpoint instead of a local model")
    g.add_argument("--model", help="model name at --base-url (default: --generator)")
    g.add_argument("--system", help="system prompt (default: the PlatoLM prompt for local models, none remote)")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=2048)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--limit", type=int, help="only the first N instructions")
    g.add_argument("--parallel", type=int, default=8)
    g.add_argument("--max-retries", type=int, default=5)
    g.add_argument("--api-key-env", default=DEFAULT_KEY_ENV)
    g.set_defaults(func=cmd_generate)

    j = sub.add_parser("judge", help="score outputs with the alpaca_eval package")
    j.add_argument("--model-outputs", required=True)
    j.add_argument("--annotators-config", default="alpaca_eval_gpt4", help="alpaca_eval annotator config name")
    j.add_argument("--reference-outputs", help="reference outputs (default: alpaca_eval's, from the hub)")
    j.add_argument("--metric", default="length_controlled", choices=("length_controlled", "win_rate"))
    j.add_argument("--name", help="model name in the leaderboard (default: the outputs' generator)")
    j.add_argument("--output-path", default="auto", help="alpaca_eval's output directory")
    j.add_argument("--summary", help="write the summary JSON here (for eval.tables)")
    j.set_defaults(func=cmd_judge)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
