"""How human-like and rich are the questions of a dialogue corpus? The paper's question-quality measures.

Over the human turns ("questions") of one or several corpora (ShareGPT / OpenAI-messages files or
datasets directories), side by side:

* topic diversity: mean pairwise cosine similarity of the question embeddings (lower = more
  diverse), over the full N x N matrix with its diagonal (as the paper computed it) and without the
  diagonal. For unit vectors the sum of all pairwise cosines is ``|sum_i e_i|^2``, so the mean is
  exact in O(N d) time with one block of rows in memory: 100K+ questions never build the N x N matrix.
  Embeddings come from the local MiniLM (``--embedder minilm``, offline, the default) or an
  OpenAI-compatible endpoint (``--embedder openai``: text-embedding-ada-002, the paper's; as the original's
  openai_embed.py, each text cut to its first 2,048 tokens in the model's tiktoken encoding and sent in
  batches of 16; cached per batch); the report names the embedder used;
* lexical diversity: mean MTLD per question (``lexicalrichness``, threshold 0.72); questions without
  a countable word are skipped and counted;
* human-likeness (``--detector SPEC``): share of questions a detector takes for human-written (the paper's
  was a private service). ``--questions by-position`` scores the turns at even positions of each session
  (0, 2, 4, ...), as the original's cli_detector.py took its questions; the default takes the human turns.
  SPEC is anything ``eval.detector.load_detector`` accepts (``default``: the offline detector trained on
  ShareGPT; a saved detector; ``judge:MODEL[@URL]``; a Hugging Face classifier directory) or a classifier's
  hub name; ``--human-label`` names a classifier's human label;
* judge scores (``--judge`` / ``--judge-model``): complexity, relevancy, logicality and diversity of every
  session's questions (or a random ``--sample N``), 1-10, from any OpenAI-compatible model (the paper:
  gpt-3.5-turbo-16k); resumable judgment file. ``--prompt-file`` replaces this project's prompt; the
  original's prompt file works unchanged: a prompt without a ``{conversation}`` placeholder gets the
  transcript appended as the original did (``#[Human's question]#`` / ``#[Assistant's answer]#``), and
  replies are parsed in its ``{Complexity: n, Relevancy: n, ...}`` form as well as ``Complexity: [[n]]``.
  A reply with no parsable score is recorded as an error and counted, never scored;
* corpus statistics (sessions, rounds, tokens per utterance and session) from ``data.stats``, the
  code behind ``python -m data.prepare stats``.

Usage::

    python -m eval.question_quality --data socraticchat.json --embedder minilm --json
    # several corpora side by side, one JSON per corpus for eval.tables
    python -m eval.question_quality --data socraticchat.json roleplay.json sharegpt.json \\
        --name SocraticChat Role-play ShareGPT --out results/question_quality --detector default
    # the paper's settings (needs OPENAI_API_KEY)
    python -m eval.question_quality --data socraticchat.json --name SocraticChat --embedder openai \\
        --judge --prompt-file prompt_template.txt --sample 100 --out results/question_quality/SocraticChat.json
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from eval.detector import load_detector
from core.options import MAX_RETRIES, add_endpoint_args, add_flag
from core.conversation import GPT, HUMAN, BadRecordSummary, Conversation, atomic_write
from core.endpoint import Endpoint
from core.engine import Job, JobLog, run_jobs
from core.errors import UsageError
from core.runner import command

MTLD_THRESHOLD = 0.72
CRITERIA = ("complexity", "relevancy", "logicality", "diversity")
PAPER_JUDGE_MODEL = "gpt-3.5-turbo-16k"  # the original's cli_chatgpt.py
PAPER_EMBEDDING_MODEL = "text-embedding-ada-002"  # the original's openai_embed.py
EMBED_MAX_TOKENS, EMBED_BATCH = 2048, 16  # ... which cut every text to 2,048 tiktoken tokens and sent 16 at a time
QUESTION_CHOICES = ("role", "by-position")
MINILM = "all-MiniLM-L6-v2"
CONVERSATION = "{conversation}"
DEFAULT_PROMPT = """You will read a conversation between a human and an AI assistant. Judge only the human's \
questions, not the assistant's answers, on four criteria, each on a scale from 1 (poor) to 10 (excellent):

- Complexity: do the questions demand knowledge, reasoning or several steps, rather than a one-line fact?
- Relevancy: does each question follow sensibly from the conversation so far (or start a clear new topic)?
- Logicality: are the questions coherent, well-formed and free of contradictions?
- Diversity: do the questions cover varied topics, angles or kinds of request instead of repeating each other?

Explain your judgement in two or three sentences, then give the four scores exactly in this format:
Complexity: [[score]]
Relevancy: [[score]]
Logicality: [[score]]
Diversity: [[score]]

[The Start of the Conversation]
{conversation}
[The End of the Conversation]"""
_NAMES = "|".join(CRITERIA)
_BRACKETED = re.compile(rf"\b({_NAMES})\W*\[\[(\d+(?:\.\d+)?)\]\]", re.IGNORECASE)
# the original's requested form: "{Complexity: 7, Relevancy: 8, ...}" (keys may come quoted)
_PLAIN = re.compile(rf"\b({_NAMES})[\"']?\s*[:=]\s*[\"']?(\d+(?:\.\d+)?)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------
def topic_diversity(embeddings: np.ndarray, block: int = 8192) -> tuple[float, float]:
    """(mean cosine over all N x N pairs incl. the diagonal, mean over the N(N-1) off-diagonal pairs).

    Rows are normalised block by block (float64), so extra memory is O(block x dim).
    """
    n, dim = embeddings.shape
    if n < 2:
        raise ValueError("topic diversity needs at least two questions")
    total = np.zeros(dim, dtype=np.float64)
    diag = 0.0
    for start in range(0, n, block):
        x = np.asarray(embeddings[start:start + block], dtype=np.float64)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"embedding {start + int(np.argmin(norms))} is all zeros: no cosine is defined")
        x = x / norms
        total += x.sum(axis=0)
        diag += float(np.einsum("ij,ij->", x, x))
    all_pairs = float(total @ total)
    return all_pairs / (n * n), (all_pairs - diag) / (n * (n - 1))


def mtld_scores(questions: Sequence[str], threshold: float = MTLD_THRESHOLD) -> tuple[list[float], int]:
    """MTLD of each question, and the number skipped (no word left after lexicalrichness's preprocessing)."""
    from lexicalrichness import LexicalRichness

    scores, skipped = [], 0
    for q in questions:
        lex = LexicalRichness(q)
        if lex.words == 0:
            skipped += 1
            continue
        scores.append(lex.mtld(threshold=threshold))
    return scores, skipped


def minilm_embedder(batch_size: int = 64) -> Callable[[Sequence[str]], np.ndarray]:
    from sentence_transformers import SentenceTransformer

    from core.assets import minilm_dir
    from model.generate import pick_device

    model = SentenceTransformer(str(minilm_dir()), device=pick_device("auto"))
    return lambda questions: model.encode(list(questions), batch_size=batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=None)


def embed_minilm(questions: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length MiniLM embeddings of ``questions`` (loads the model for this one call)."""
    return minilm_embedder(batch_size)(questions)


def embedding_encoding(model: str):
    """The tiktoken encoding of an embedding model (unknown names: text-embedding-ada-002's cl100k_base), or
    None when tiktoken cannot load it (its files are downloaded once; offline and uncached they are missing)."""
    try:
        import tiktoken

        try:
            return tiktoken.encoding_for_model(model)
        except KeyError:
            return tiktoken.get_encoding("cl100k_base")
    except Exception as err:  # noqa: BLE001 - ImportError, or the download failing
        print(f"warning: no tiktoken encoding for {model} ({type(err).__name__}: {err}); texts are sent whole, "
              f"not cut to {EMBED_MAX_TOKENS} tokens as the original did", file=sys.stderr)
        return None


def truncate_for_embedding(texts: Sequence[str], encoding, max_tokens: int = EMBED_MAX_TOKENS) -> list[str]:
    """The original's ``preprocess_text``: each text cut to its first ``max_tokens`` tokens of ``encoding``
    (it sent those token ids; the decoded prefix is sent here, which any OpenAI-compatible server takes)."""
    if encoding is None:
        return list(texts)
    out = []
    for text in texts:
        ids = encoding.encode(text, disallowed_special=())
        out.append(encoding.decode(ids[:max_tokens]) if len(ids) > max_tokens else text)
    return out


def embed_openai(questions: Sequence[str], model: str, base_url: str | None, key_env: str,
                 cache_dir: Path, batch_size: int = EMBED_BATCH, parallel: int = 4, max_retries: int = MAX_RETRIES,
                 encoding: object = "auto") -> np.ndarray:
    """Embeddings from an OpenAI-compatible endpoint, batch by batch, each text cut to EMBED_MAX_TOKENS tokens
    of ``encoding`` ("auto": the model's tiktoken encoding, :func:`embedding_encoding`; None: not cut).

    Each finished batch is saved as ``cache_dir/<sha256 of model and texts>.npy``, so a rerun (after a
    crash, or on the same corpus) pays only for the batches it does not have yet.
    """
    questions = truncate_for_embedding(questions, embedding_encoding(model) if encoding == "auto" else encoding)
    ep = Endpoint(base_url, model, key_env, max_retries, what="embedder")
    batches = [list(questions[i:i + batch_size]) for i in range(0, len(questions), batch_size)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = [cache_dir / (hashlib.sha256(json.dumps([model, b]).encode()).hexdigest() + ".npy") for b in batches]
    todo = [i for i, f in enumerate(files) if not f.exists()]
    print(f"embeddings: {len(batches) - len(todo)} of {len(batches)} batches cached in {cache_dir}", file=sys.stderr)

    async def embed(i: int) -> tuple[int, np.ndarray]:
        return i, np.array(await ep.embed(batches[i]), dtype=np.float32)

    def save(result):
        i, vectors = result
        atomic_write(files[i], lambda f: np.save(f.buffer, vectors))

    tally = run_jobs([Job(i, functools.partial(embed, i)) for i in todo], parallel, on_done=save,
                     desc="embeddings", unit="batch")
    tally.raise_if_failed("embedding batches")
    return np.concatenate([np.load(f) for f in files])


# ---------------------------------------------------------------------------------------------
# the judge
# ---------------------------------------------------------------------------------------------
def render_session(conv: Conversation) -> str:
    """The transcript for this project's prompt (its {conversation} placeholder)."""
    names = {HUMAN: "Human", GPT: "Assistant"}
    return "\n\n".join(f"### {names[t.role]}:\n{t.text}" for t in conv.turns)


def render_original(conv: Conversation) -> str:
    """The transcript as the original's cli_chatgpt.py appended it to its prompt."""
    parts = ["#[Start of multi-round conversation]#\n\n"]
    for t in conv.turns:
        if t.role == HUMAN:
            parts.append(f"#[Human's question]#\n{t.text}\n")
        else:
            parts.append(f"#[Assistant's answer]#\n{t.text}\n\n")
    parts.append("#[End of multi-round conversation]#\n\n")
    return "".join(parts)


def judge_prompt(template: str, conv: Conversation) -> str:
    if CONVERSATION in template:
        return template.replace(CONVERSATION, render_session(conv))
    return template + render_original(conv)  # the original concatenated prompt and transcript directly


def parse_criteria(judgment: str) -> dict[str, float]:
    """The scores (1-10) in ``Criterion: [[n]]`` form, else in the original's ``{Criterion: n, ...}`` form;
    the last one of each criterion wins; an empty dict when the reply has none."""
    found = {m.group(1).lower(): float(m.group(2)) for m in _BRACKETED.finditer(judgment)}
    if not found:
        found = {m.group(1).lower(): float(m.group(2)) for m in _PLAIN.finditer(judgment)}
    return {k: v for k, v in found.items() if 1 <= v <= 10}


def judgment_path(args, data: str, name: str) -> Path:
    """--judgment-file; else next to the results (--out FOLDER), else under runs/question_quality/."""
    judge = args.judge_model.replace("/", "_")
    if args.judgment_file:
        return Path(args.judgment_file)
    if args.out_dir:
        return Path(args.out_dir) / f"{name}.{judge}.judgments.jsonl"
    return Path("runs") / "question_quality" / f"{Path(data).stem}.{judge}.jsonl"


def judge_sessions(convs: list[Conversation], args, path: Path) -> dict:
    template = Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else DEFAULT_PROMPT
    model = args.judge_model
    sample = convs if not args.sample or len(convs) <= args.sample else random.Random(args.seed).sample(convs, args.sample)
    log = JobLog(path, lambda r: (r["id"], r.get("judge")))
    todo = [c for c in sample if (c.id, model) not in log.done]
    print(f"judge: {len(sample)} sessions, {len(sample) - len(todo)} already in {path}", file=sys.stderr)
    if todo:
        ep = Endpoint(args.judge_base_url, model, args.api_key_env, args.max_retries, what="judge")

        async def judge(conv: Conversation) -> dict:
            reply = await ep.chat([{"role": "user", "content": judge_prompt(template, conv)}],
                                  temperature=0.0, max_tokens=1024)
            scores = parse_criteria(reply.text)
            rec = {"id": conv.id, "judge": model, "judgment": reply.text, "scores": scores}
            return rec if scores else {**rec, "error": "no parsable score"}

        jobs = [Job((c.id, model), functools.partial(judge, c)) for c in todo]
        run_jobs(jobs, args.concurrency, sink=log, desc="judge", unit="session").raise_if_failed("judge requests")
    done = {key[0]: rec for key, rec in log.done.items() if key[1] == model}
    return judge_summary([done[c.id] for c in sample], model, path, args.prompt_file)


def judge_summary(recs: list[dict], model: str, path: Path, prompt_file: str | None) -> dict:
    """Means over the parsed replies; replies without any score are errors, counted and left out."""
    errors = [r for r in recs if r.get("error")]
    if errors:
        print(f"warning: {len(errors)} of {len(recs)} judge replies had no parsable score (e.g. session "
              f"{errors[0]['id']!r} in {path}); counted as errors, not scored", file=sys.stderr)
    out = {"model": model, "prompt": prompt_file or "default", "num_judged": len(recs),
           "num_errors": len(errors), "judgment_file": str(path)}
    for name in CRITERIA:
        vals = [r["scores"][name] for r in recs if name in r["scores"]]
        out[name] = round(sum(vals) / len(vals), 4) if vals else None
        out[f"{name}_missing"] = len(recs) - len(errors) - len(vals)
    return out


# ---------------------------------------------------------------------------------------------
def load_conversations(path: str, strict: bool) -> tuple[list[Conversation], BadRecordSummary]:
    from core.formats import iter_input

    summary = BadRecordSummary()
    convs = [c for c in iter_input(path, strict, summary) if any(t.role == HUMAN for t in c.turns)]
    return convs, summary


def make_embedder(args) -> tuple[str, Callable[[Sequence[str]], np.ndarray]]:
    """(the embedder's name for the report, questions -> embeddings)."""
    if args.embedder == "minilm":
        if os.environ.get(args.api_key_env):
            print(f"note: ${args.api_key_env} is set: --embedder openai ({PAPER_EMBEDDING_MODEL}) is the paper's "
                  f"embedder; using the offline {MINILM}", file=sys.stderr)
        return MINILM, minilm_embedder(args.batch_size)
    cache = Path(args.embedding_cache or Path("runs") / "question_quality" / "embeddings"
                 / args.embedding_model.replace("/", "_"))
    return args.embedding_model, lambda qs: embed_openai(
        qs, args.embedding_model, args.embedding_base_url, args.api_key_env, cache,
        parallel=args.concurrency, max_retries=args.max_retries)


def select_questions(convs: Sequence[Conversation], how: str = "role") -> list[str]:
    """The questions of a corpus: its human turns, or (``by-position``) the turns at even positions of each
    session, as the original's human-like ratio read them (cli_detector.py: ``idx % 2 == 0``)."""
    if how == "by-position":
        return [t.text for c in convs for i, t in enumerate(c.turns) if i % 2 == 0]
    return [t.text for c in convs for t in c.turns if t.role == HUMAN]


def evaluate(args, data: str, name: str, embedder, detector, tokenizer) -> dict:
    """Every measure for one corpus."""
    convs, summary = load_conversations(data, args.strict)
    questions = select_questions(convs)
    if len(questions) < 2:
        raise UsageError(f"{data}: {len(questions)} questions; at least two are needed")
    from data.stats import CorpusStats

    stats = CorpusStats(tokenizer).add_all(convs).summary()
    mtld, mtld_skipped = mtld_scores(questions)
    embedder_name, embed = embedder
    with_diag, off_diag = topic_diversity(embed(questions))
    result = {
        "name": name, "data": str(data),
        "num_sessions": len(convs), "num_questions": len(questions), "avg_rounds": stats["avg_rounds"],
        "mtld": round(float(np.mean(mtld)), 4) if mtld else None, "mtld_skipped": mtld_skipped,
        "topic_diversity": round(with_diag, 6), "topic_diversity_offdiag": round(off_diag, 6),
        "embedder": embedder_name, "skipped_records": summary.total, "stats": stats,
    }
    if detector is not None:
        scored = select_questions(convs, args.questions)
        result["human_ratio"] = round(float(np.mean(detector.is_human(scored))), 4)
        result["detector"], result["detector_accuracy"] = detector.name, detector.accuracy
        result["human_ratio_questions"], result["human_ratio_num_questions"] = args.questions, len(scored)
    if args.judge_model:
        result["judge"] = judge_sessions(convs, args, judgment_path(args, data, name))
    if summary.total:
        print(summary.report(), file=sys.stderr)
    return result


def format_report(r: dict) -> str:
    paper = " (the paper's)" if r["embedder"] == PAPER_EMBEDDING_MODEL else ""
    lines = [f"{r['name']}: {r['num_sessions']} sessions, {r['num_questions']} questions, "
             f"{r['avg_rounds']} rounds per session",
             f"  topic diversity (mean cosine, lower = more diverse): {r['topic_diversity']:.4f} "
             f"(without diagonal {r['topic_diversity_offdiag']:.4f}; embedder {r['embedder']}{paper})",
             f"  lexical diversity (mean MTLD): {r['mtld']} ({r['mtld_skipped']} questions skipped)"]
    if "human_ratio" in r:
        acc = r.get("detector_accuracy")
        lines.append(f"  human-like ratio: {r['human_ratio']:.4f} (detector {r['detector']}"
                     + (f", held-out accuracy {acc:.3f})" if acc is not None else ")"))
    if "judge" in r:
        j = r["judge"]
        lines.append(f"  judge {j['model']} on {j['num_judged']} sessions ({j['num_errors']} unparsable): "
                     + ", ".join(f"{c} {j[c]}" for c in CRITERIA))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.question_quality", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", required=True, nargs="+", help="ShareGPT / OpenAI-messages files or datasets "
                                                            "directories, one per corpus")
    p.add_argument("--name", nargs="+", help="corpus names in tables, one per --data (default: the file names)")
    p.add_argument("--embedder", default="minilm", choices=("minilm", "openai"),
                   help=f"minilm: {MINILM}, offline (default); openai: an embeddings endpoint (the paper's)")
    p.add_argument("--embedding-model", default=PAPER_EMBEDDING_MODEL, help="for --embedder openai")
    p.add_argument("--embedding-base-url", help="OpenAI-compatible endpoint for embeddings")
    p.add_argument("--embedding-cache", help="directory of finished embedding batches, reused on reruns "
                                             "(default runs/question_quality/embeddings/MODEL)")
    p.add_argument("--detector", help="human-likeness detector: 'default' (offline, trained on ShareGPT), a saved "
                                      "detector, judge:MODEL[@URL], or a Hugging Face classifier (path or hub name)")
    p.add_argument("--human-label", default="Human", help="a Hugging Face detector's label for human-written text")
    p.add_argument("--questions", default="role", choices=QUESTION_CHOICES,
                   help="the turns the human-like ratio scores: the human turns (default), or by-position: turns "
                        "0, 2, 4, ... of each session, as the original's cli_detector.py (the published ratios)")
    p.add_argument("--judge", action="store_true", help=f"judge the questions with {PAPER_JUDGE_MODEL} (the paper's)")
    p.add_argument("--judge-model", help="judge the questions with this model (implies --judge)")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint for the judge")
    add_flag(p, "--sample", "--judge-sample", type=int,
             help="judge a random sample of N sessions (default: every session)")
    p.add_argument("--judgment-file", help="resumable judge log, one --data only (default OUT/NAME.JUDGE.judgments"
                                           ".jsonl with --out FOLDER, else runs/question_quality/DATA.JUDGE.jsonl)")
    p.add_argument("--prompt-file", help="judge prompt; with a {conversation} placeholder, or the original's "
                                         "prompt file unchanged (the transcript is appended)")
    p.add_argument("--tokenizer", default="smollm2", help="tokenizer for the token statistics")
    add_endpoint_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--json", action="store_true", help="print JSON (one object per corpus; a list for several)")
    add_flag(p, "--out", "--out-dir", help="a .json file: the JSON object of one --data; else a folder: one NAME.json "
                                           "per corpus (for eval.tables)")
    return p


def check_args(args) -> list[str]:
    names = args.name or [Path(d).stem for d in args.data]
    if len(names) != len(args.data):
        raise UsageError(f"{len(args.data)} --data but {len(names)} --name: give one name per corpus")
    args.out_dir = None
    if args.out and Path(args.out).suffix.lower() != ".json":  # a folder
        args.out, args.out_dir = None, args.out
    if args.out and len(args.data) > 1:
        raise UsageError("--out FILE.json takes one corpus; for several give a folder")
    if args.judge and not args.judge_model:
        args.judge_model = PAPER_JUDGE_MODEL
    if args.judge_model and len(args.data) > 1 and args.judgment_file:
        raise UsageError("--judgment-file takes one corpus; leave it out to get one log per corpus")
    if args.prompt_file and not Path(args.prompt_file).is_file():
        raise UsageError(f"{args.prompt_file}: prompt file not found")
    for data in args.data:
        if not Path(data).exists():
            raise UsageError(f"{data}: no such file or datasets directory")
    return names


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = check_args(args)
    detector = load_detector(args.detector, args.human_label) if args.detector else None  # fail early
    embedder = make_embedder(args)
    from core.assets import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)  # once for every corpus
    results = []
    for data, name in zip(args.data, names):
        result = evaluate(args, data, name, embedder, detector, tokenizer)
        results.append(result)
        out = args.out or (Path(args.out_dir) / f"{name}.json" if args.out_dir else None)
        if out:
            atomic_write(out, lambda f: f.write(json.dumps(result, indent=1) + "\n"))
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
    else:
        print("\n".join(map(format_report, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
