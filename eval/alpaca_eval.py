"""AlpacaEval: write a model's outputs in AlpacaEval's format, then score them with the ``alpaca_eval`` package.

``generate`` answers the 805 AlpacaEval instructions (from the hub when online, or ``--data
FILE``: a JSON array or JSONL of ``{"instruction", "dataset"?}``) with a local model or any
OpenAI-compatible endpoint and writes ``[{"instruction", "output", "generator", "dataset"}]``;
it resumes where it stopped. ``judge`` runs ``alpaca_eval.evaluate`` and writes a one-line summary
for ``eval.tables``, with the settings of one AlpacaEval version:

=========  =====================================  ==================================  =====================
version    annotator                              reference outputs                   metric
=========  =====================================  ==================================  =====================
1          alpaca_eval_gpt4 (GPT-4)               text-davinci-003                    win rate (the paper's
                                                                                      81.94 % for PlatoLM-7b)
2          weighted_alpaca_eval_gpt4_turbo        gpt4_turbo                          length-controlled win
(default)  (GPT-4 Turbo)                                                              rate
=========  =====================================  ==================================  =====================

``alpaca_eval`` is not a dependency of this project (it needs ``setuptools<81``): ``make alpaca-env``
puts it in its own virtual environment, ``.venv-alpaca``, and ``judge`` runs there by itself when the
package cannot be imported here. The reference outputs come from the Hugging Face hub (and version 2's
length control needs a weights file from it); offline, pass ``--reference-outputs FILE --metric win_rate``.
The annotator's OpenAI client reads ``OPENAI_API_KEY``, and ``OPENAI_API_BASE`` for any other
OpenAI-compatible endpoint.

Usage::

    python -m eval.alpaca_eval generate --model runs/platolm --name platolm-7b --out runs/alpaca/platolm.json
    python -m eval.alpaca_eval generate --base-url http://127.0.0.1:8000/v1 --model platolm --name platolm-7b \\
        --data alpaca_eval.json --out runs/alpaca/platolm.json
    make alpaca-env
    # AlpacaEval 1.0, the paper's setting
    OPENAI_API_KEY=... python -m eval.alpaca_eval judge --version 1 --data runs/alpaca/platolm.json \\
        --out results/alpaca_eval/platolm-7b-v1.json
    # AlpacaEval 2.0 (length-controlled)
    OPENAI_API_KEY=... python -m eval.alpaca_eval judge --data runs/alpaca/platolm.json \\
        --out results/alpaca_eval/platolm-7b-v2.json
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from core.options import add_answerer_args, add_endpoint_args, add_flag, check_answerer
from core.conversation import BadRecord, atomic_write, read_json_records, write_json_array
from core.errors import UsageError
from core.runner import command

ROOT = Path(__file__).resolve().parent.parent
HUB_REPO, HUB_FILE = "tatsu-lab/alpaca_eval", "alpaca_eval.json"
DEFAULT_ALPACA_PYTHON = ROOT / ".venv-alpaca" / "bin" / "python"
VERSIONS = {
    "1": {"annotator": "alpaca_eval_gpt4", "metric": "win_rate", "reference": "text_davinci_003"},
    "2": {"annotator": "weighted_alpaca_eval_gpt4_turbo", "metric": "length_controlled", "reference": "gpt4_turbo"},
}
METRICS = {"win_rate": "get_winrate", "length_controlled": "get_length_controlled_winrate"}


def load_instructions(path: str | None) -> list[dict]:
    """[{"instruction", "dataset"?}] from a file, or AlpacaEval's 805 from the hub."""
    if path is None:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(HUB_REPO, HUB_FILE, repo_type="dataset")
        except Exception as err:
            raise UsageError(f"cannot fetch {HUB_REPO}/{HUB_FILE} from the hub ({type(err).__name__}); "
                             f"offline, pass --data FILE") from None
    if not Path(path).is_file():
        raise UsageError(f"instructions file {path} not found")
    out = []
    for i, rec in enumerate(read_json_records(path)):
        if not isinstance(rec, dict) or not isinstance(rec.get("instruction"), str):
            raise BadRecord(path, i, "no 'instruction' string")
        out.append({"instruction": rec["instruction"], "dataset": rec.get("dataset", "")})
    return out


def generate_local(args, todo: list[dict], keep, save) -> None:
    from tqdm import tqdm

    from core.conversation import GPT, HUMAN, Turn
    from model.generate import Generator

    gen = Generator(args.model, template=args.template, max_context=args.max_context)
    for start in tqdm(range(0, len(todo), args.batch_size), desc="batches", file=sys.stderr, disable=None):
        chunk = todo[start:start + args.batch_size]
        outs = gen.generate([[Turn(HUMAN, it["instruction"])] for it in chunk], role=GPT, system=args.system,
                            temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
        for it, c in zip(chunk, outs):
            keep((it, c.text))
        save()  # the whole file, atomically, after every batch


def generate_remote(args, todo: list[dict], keep, save) -> None:
    from core.endpoint import Endpoint
    from core.engine import Job, run_jobs

    ep = Endpoint(args.base_url, args.model or args.generator, args.api_key_env, args.max_retries, what="answers")

    async def answer(item: dict) -> tuple[dict, str]:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                   [{"role": "user", "content": item["instruction"]}]
        reply = await ep.chat(messages, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_new_tokens)
        return item, reply.text

    try:
        tally = run_jobs([Job(it["instruction"], functools.partial(answer, it)) for it in todo], args.concurrency,
                         on_done=keep, desc="outputs", unit="instruction")
    finally:
        save()
    tally.raise_if_failed("instructions")


def cmd_generate(args) -> int:
    check_answerer(args)
    items = load_instructions(args.instructions)[: args.limit]
    out = Path(args.out)
    done = {}
    if out.is_file():
        done = {r["instruction"]: r for r in read_json_records(out) if r.get("generator") == args.generator}
    todo = [it for it in items if it["instruction"] not in done]
    print(f"{len(items) - len(todo)} of {len(items)} instructions already answered in {out}", file=sys.stderr)

    def save():
        write_json_array(out, (done[it["instruction"]] for it in items if it["instruction"] in done))

    def keep(result):
        item, text = result
        done[item["instruction"]] = {"instruction": item["instruction"], "output": text.strip(),
                                     "generator": args.generator, "dataset": item["dataset"]}
        if len(done) % args.batch_size == 0:
            save()

    try:
        if todo:
            (generate_remote if args.base_url else generate_local)(args, todo, keep, save)
    finally:
        print(f"{len(done)} outputs in {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# judge
# ---------------------------------------------------------------------------------------------
def alpaca_python(args) -> Path | None:
    """The interpreter to judge with: None for this one (alpaca_eval importable here), else .venv-alpaca's."""
    if importlib.util.find_spec("alpaca_eval") is not None:
        return None
    python = Path(args.alpaca_python)
    if not python.is_file():
        raise UsageError(f"the alpaca_eval package is not available here, nor at {python}: run `make alpaca-env` "
                         f"(its own virtual environment: alpaca_eval needs setuptools<81), or pass --alpaca-python")
    return python


def run_in_alpaca_env(python: Path, argv: list[str]) -> int:
    """The same judge command, run by the alpaca environment's interpreter (this repository on its path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(python), "-m", "eval.alpaca_eval", *argv], env=env, cwd=os.getcwd()).returncode


def settings(args) -> dict:
    version = VERSIONS[args.version]
    return {"version": args.version, "annotator": args.annotators_config or version["annotator"],
            "metric": args.metric or version["metric"],
            "reference": args.reference_outputs or f"AlpacaEval {args.version}.0 ({version['reference']}, hub)"}


def evaluate(args, chosen: dict):
    """alpaca_eval.evaluate with the version's settings; its annotation cache lives in the output directory."""
    os.environ["IS_ALPACA_EVAL_2"] = str(args.version == "2")  # read by alpaca_eval.constants at import
    from alpaca_eval import main as alpaca_main

    out_dir = Path(args.model_outputs).parent if args.output_path == "auto" else Path(args.output_path)
    cache = out_dir / chosen["annotator"] / "annotations_cache.json"  # alpaca_eval writes to OUT/ANNOTATOR/
    cache.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(model_outputs=args.model_outputs, annotators_config=chosen["annotator"], output_path=out_dir,
                  is_return_instead_of_print=True, fn_metric=METRICS[chosen["metric"]],
                  # never take the model's row from the package's leaderboards, never write into them
                  is_overwrite_leaderboard=True, is_cache_leaderboard=False,
                  caching_path=cache)
    if args.reference_outputs:
        kwargs["reference_outputs"] = args.reference_outputs
    if args.name:
        kwargs["name"] = args.name
    try:
        leaderboard, _ = alpaca_main.evaluate(**kwargs)
    except (OSError, ConnectionError) as err:  # hub downloads (reference outputs, length-control weights) offline
        raise UsageError(f"alpaca_eval could not get a file it needs ({str(err).splitlines()[0][:200]}); offline, "
                         f"pass --reference-outputs FILE and --metric win_rate") from None
    return leaderboard


def cmd_judge(args, argv: list[str]) -> int:
    if not Path(args.model_outputs).is_file():
        raise UsageError(f"model outputs {args.model_outputs} not found (run `eval.alpaca_eval generate`)")
    if args.reference_outputs and not Path(args.reference_outputs).is_file():
        raise UsageError(f"reference outputs {args.reference_outputs} not found")
    python = alpaca_python(args)
    if python is not None:
        return run_in_alpaca_env(python, argv)
    chosen = settings(args)
    leaderboard = evaluate(args, chosen)
    name = args.name or leaderboard.index[0]
    row = leaderboard.loc[name]

    def get(col):
        return round(float(row[col]), 4) if col in row and row[col] == row[col] else None

    summary = {"model": str(name), **chosen, "win_rate": get("win_rate"), "standard_error": get("standard_error"),
               "lc_win_rate": get("length_controlled_winrate"), "lc_standard_error": get("lc_standard_error"),
               "n_total": get("n_total"), "avg_length": get("avg_length")}
    if args.summary:
        atomic_write(args.summary, lambda f: f.write(json.dumps(summary, indent=1) + "\n"))
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.alpaca_eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write model outputs in AlpacaEval's format (resumable)")
    add_flag(g, "--data", "--instructions", dest="instructions",
             help="JSON/JSONL of {instruction, dataset?} (default: the hub's 805)")
    add_flag(g, "--name", "--generator", dest="generator", required=True,
             help="the model's name, written into the outputs (their generator)")
    g.add_argument("--out", required=True, help="output JSON array")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--limit", type=int, help="only the first N instructions")
    add_answerer_args(g, "--name", max_new_tokens=2048)
    add_endpoint_args(g)

    j = sub.add_parser("judge", help="score outputs with the alpaca_eval package")
    add_flag(j, "--data", "--model-outputs", dest="model_outputs", required=True,
             help="the outputs `generate` wrote (AlpacaEval's model_outputs)")
    j.add_argument("--version", default="2", choices=sorted(VERSIONS),
                   help="AlpacaEval settings: 1 = the paper's (GPT-4 vs text-davinci-003, win rate); 2 (default)")
    j.add_argument("--annotators-config", help="alpaca_eval annotator config (default: the version's)")
    j.add_argument("--reference-outputs", help="reference outputs file (default: the version's, from the hub)")
    j.add_argument("--metric", choices=sorted(METRICS), help="default: the version's")
    j.add_argument("--name", help="model name in the leaderboard (default: the outputs' generator)")
    add_flag(j, "--annotations-dir", "--output-path", dest="output_path", default="auto",
             help="alpaca_eval's output directory: its leaderboard and annotation cache (default: next to the outputs)")
    add_flag(j, "--out", "--summary", dest="summary", help="write the summary JSON here (for eval.tables)")
    j.add_argument("--alpaca-python", default=str(DEFAULT_ALPACA_PYTHON),
                   help="interpreter with alpaca_eval, used when this one lacks it (default .venv-alpaca's)")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    return cmd_generate(args) if args.command == "generate" else cmd_judge(args, argv)


if __name__ == "__main__":
    sys.exit(main())
