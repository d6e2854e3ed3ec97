"""How human-like and rich are the questions of a dialogue corpus? The paper's question-quality measures.

Over the human turns ("questions") of a ShareGPT / OpenAI-messages file or a datasets directory:

* topic diversity: mean pairwise cosine similarity of the question embeddings (lower = more
  diverse), over the full N x N matrix with its diagonal (as the paper computed it) and without the
  diagonal. For unit vectors the sum of all pairwise cosines is ``|sum_i e_i|^2``, so the mean is
  exact in O(N d) time with one block of rows in memory: 100K+ questions never build the N x N matrix;
  embeddings come from the local MiniLM (offline) or an OpenAI-compatible endpoint (cached per batch);
* lexical diversity: mean MTLD per question (``lexicalrichness``, threshold 0.72); questions without
  a countable word are skipped and counted;
* human-likeness (``--detector MODEL``): share of questions a Hugging Face text classifier labels
  human-written (e.g. ``Hello-SimpleAI/chatgpt-detector-roberta``, label ``Human``);
* judge scores (``--judge-model``): complexity, relevancy, logicality and diversity of each sampled
  session's questions, 1-10, from any OpenAI-compatible model (resumable judgment file);
  ``--prompt-file`` replaces this project's prompt, e.g. with the paper's own wording;
* corpus statistics (sessions, rounds, tokens per utterance and session) from ``data.stats``, the
  code behind ``python -m data.prepare stats``.

Usage::

    python -m eval.question_quality --data socraticchat.json --embedder minilm --json
    python -m eval.question_quality --data socraticchat.json --name SocraticChat --out results/question_quality/socraticchat.json \\
        --detector Hello-SimpleAI/chatgpt-detector-roberta --judge-model gpt-4 --judge-sample 100
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from eval.judge_client import DEFAULT_KEY_ENV, JsonlLog, SetupError, make_client, run_jobs
from model.conversation import GPT, HUMAN, BadRecord, BadRecordSummary, Conversation

MTLD_THRESHOLD = 0.72
CRITERIA = ("complexity", "relevancy", "logicality", "diversity")
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
_SCORE = re.compile(r"(complexity|relevancy|logicality|diversity)\W*\[\[(\d+(?:\.\d+)?)\]\]", re.IGNORECASE)


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


def embed_minilm(questions: Sequence[str], batch_size: int = 64) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    from model.assets import minilm_dir
    from model.generate import pick_device

    model = SentenceTransformer(str(minilm_dir()), device=pick_device("auto"))
    return model.encode(list(questions), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=None)


def embed_openai(questions: Sequence[str], model: str, base_url: str | None, key_env: str,
                 cache_dir: Path, batch_size: int = 256, parallel: int = 4, max_retries: int = 5) -> np.ndarray:
    """Embeddings from an OpenAI-compatible endpoint, batch by batch.

    Each finished batch is saved as ``cache_dir/<sha256 of model and texts>.npy``, so a rerun (after a
    crash, or on the same corpus) pays only for the batches it does not have yet.
    """
    import hashlib
    import os

    client = make_client(base_url, key_env, max_retries)
    batches = [list(questions[i:i + batch_size]) for i in range(0, len(questions), batch_size)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = [cache_dir / (hashlib.sha256(json.dumps([model, b]).encode()).hexdigest() + ".npy") for b in batches]
    todo = [i for i, f in enumerate(files) if not f.exists()]
    print(f"embeddings: {len(batches) - len(todo)} of {len(batches)} batches cached in {cache_dir}", file=sys.stderr)

    def job(i):
        async def run():
            return i, np.array(await client.embed(model, batches[i]), dtype=np.float32)
        return run

    def save(result):
        i, vectors = result
        tmp = files[i].with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, files[i])

    failures = run_jobs([job(i) for i in todo], save, parallel, desc="embeddings")
    if failures:
        raise SetupError(f"{len(failures)} embedding requests failed: {failures[0]}; run again to resume")
    return np.concatenate([np.load(f) for f in files])


def load_detector(name: str):
    """A text-classification pipeline, or SetupError saying why it cannot be had (e.g. offline)."""
    from transformers import pipeline

    from model.generate import pick_device

    try:
        return pipeline("text-classification", model=name, device=pick_device("auto"))
    except (OSError, ValueError) as err:
        raise SetupError(f"detector {name!r} is not available: {str(err).splitlines()[0]} (offline, a detector "
                         f"must be a local directory or already in the Hugging Face cache)") from None


def human_ratio(detector, questions: Sequence[str], human_label: str, batch_size: int = 32) -> float:
    labels = [r["label"] for r in detector(list(questions), batch_size=batch_size, truncation=True)]
    known = {str(v).lower() for v in detector.model.config.id2label.values()}
    if human_label.lower() not in known:
        raise SetupError(f"the detector's labels are {sorted(known)}; none is {human_label!r} (use --human-label)")
    return sum(label.lower() == human_label.lower() for label in labels) / len(labels)


def render_session(conv: Conversation) -> str:
    names = {HUMAN: "Human", GPT: "Assistant"}
    return "\n\n".join(f"### {names[t.role]}:\n{t.text}" for t in conv.turns)


def parse_criteria(judgment: str) -> dict[str, float]:
    """The four ``Criterion: [[n]]`` scores found in a judgment (the last one of each wins)."""
    return {m.group(1).lower(): float(m.group(2)) for m in _SCORE.finditer(judgment)}


def judge_sessions(convs: list[Conversation], args) -> dict:
    template = Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else DEFAULT_PROMPT
    if "{conversation}" not in template:
        raise SetupError(f"{args.prompt_file}: the prompt needs a {{conversation}} placeholder")
    sample = convs if len(convs) <= args.judge_sample else random.Random(args.seed).sample(convs, args.judge_sample)
    path = Path(args.judgment_file or Path("runs") / "question_quality"
                / f"{Path(args.data).stem}.{args.judge_model.replace('/', '_')}.jsonl")
    log = JsonlLog(path)
    done = {r["id"]: r for r in log.read() if r.get("judge") == args.judge_model}
    todo = [c for c in sample if c.id not in done]
    print(f"judge: {len(sample)} sessions, {len(sample) - len(todo)} already in {path}", file=sys.stderr)
    if todo:
        client = make_client(args.judge_base_url, args.api_key_env, args.max_retries)

        def job(conv):
            async def run():
                prompt = template.replace("{conversation}", render_session(conv))
                text = await client.chat(args.judge_model, [{"role": "user", "content": prompt}], 0.0, 1024)
                return {"id": conv.id, "judge": args.judge_model, "judgment": text, "scores": parse_criteria(text)}
            return run

        def save(rec):
            log.append(rec)
            done[rec["id"]] = rec

        failures = run_jobs([job(c) for c in todo], save, args.parallel, desc="judge")
        if failures:
            raise SetupError(f"{len(failures)} judge requests failed (see above); run again to resume")
    recs = [done[c.id] for c in sample]
    out = {"model": args.judge_model, "num_judged": len(recs), "judgment_file": str(path)}
    for name in CRITERIA:
        vals = [r["scores"][name] for r in recs if name in r["scores"]]
        out[name] = round(sum(vals) / len(vals), 4) if vals else None
        out[f"{name}_missing"] = len(recs) - len(vals)
    return out


# ---------------------------------------------------------------------------------------------
def load_conversations(path: str, strict: bool) -> tuple[list[Conversation], BadRecordSummary]:
    from data.formats import iter_input

    summary = BadRecordSummary()
    try:
        convs = [c for c in iter_input(path, strict, summary) if any(t.role == HUMAN for t in c.turns)]
    except (FileNotFoundError, BadRecord) as err:
        raise SetupError(str(err)) from None
    return convs, summary


def evaluate(args) -> dict:
    detector = load_detector(args.detector) if args.detector else None  # fail before the long parts
    convs, summary = load_conversations(args.data, args.strict)
    questions = [t.text for c in convs for t in c.turns if t.role == HUMAN]
    if len(questions) < 2:
        raise SetupError(f"{args.data}: {len(questions)} questions; at least two are needed")
    from data.stats import CorpusStats
    from model.assets import load_tokenizer

    stats = CorpusStats(load_tokenizer(args.tokenizer)).add_all(convs).summary()
    mtld, mtld_skipped = mtld_scores(questions)
    if args.embedder == "minilm":
        emb = embed_minilm(questions, args.batch_size)
    else:
        cache = Path(args.embedding_cache or Path("runs") / "question_quality" / "embeddings"
                     / args.embedding_model.replace("/", "_"))
        emb = embed_openai(questions, args.embedding_model, args.embedding_base_url, args.api_key_env, cache,
                           parallel=args.parallel, max_retries=args.max_retries)
    with_diag, off_diag = topic_diversity(emb)
    result = {
        "name": args.name or Path(args.data).stem, "data": str(args.data),
        "num_sessions": len(convs), "num_questions": len(questions), "avg_rounds": stats["avg_rounds"],
        "mtld": round(float(np.mean(mtld)), 4) if mtld else None, "mtld_skipped": mtld_skipped,
        "topic_diversity": round(with_diag, 6), "topic_diversity_offdiag": round(off_diag, 6),
        "embedder": "minilm" if args.embedder == "minilm" else args.embedding_model,
        "skipped_records": summary.total, "stats": stats,
    }
    if detector is not None:
        result["human_ratio"] = round(human_ratio(detector, questions, args.human_label, args.batch_size), 4)
        result["detector"] = args.detector
    if args.judge_model:
        result["judge"] = judge_sessions(convs, args)
    if summary.total:
        print(summary.report(), file=sys.stderr)
    return result


def format_report(r: dict) -> str:
    lines = [f"{r['name']}: {r['num_sessions']} sessions, {r['num_questions']} questions, "
             f"{r['avg_rounds']} rounds per session",
             f"  topic diversity (mean cosine, lower = more diverse): {r['topic_diversity']:.4f} "
             f"(without diagonal {r['topic_diversity_offdiag']:.4f}; {r['embedder']})",
             f"  lexical diversity (mean MTLD): {r['mtld']} ({r['mtld_skipped']} questions skipped)"]
    if "human_ratio" in r:
        lines.append(f"  human-like ratio: {r['human_ratio']:.4f} ({r['detector']})")
    if "judge" in r:
        j = r["judge"]
        lines.append(f"  judge {j['model']} on {j['num_judged']} sessions: "
                     + ", ".join(f"{c} {j[c]}" for c in CRITERIA))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.question_quality", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", required=True, help="ShareGPT / OpenAI-messages file, or a datasets directory")
    p.add_argument("--name", help="dataset name in tables (default: the file name)")
    p.add_argument("--embedder", default="minilm", choices=("minilm", "openai"))
    p.add_argument("--embedding-model", default="text-embedding-ada-002", help="for --embedder openai")
    p.add_argument("--embedding-base-url", help="OpenAI-compatible endpoint for embeddings")
    p.add_argument("--embedding-cache", help="directory of finished embedding batches, reused on reruns "
                                             "(default runs/question_quality/embeddings/MODEL)")
    p.add_argument("--detector", help="Hugging Face text classifier (path or hub name)")
    p.add_argument("--human-label", default="Human", help="the detector's label for human-written text")
    p.add_argument("--judge-model", help="score complexity, relevancy, logicality, diversity with this model")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint for the judge")
    p.add_argument("--judge-sample", type=int, default=100, help="sessions to judge (random sample, default 100)")
    p.add_argument("--judgment-file", help="resumable judge log (default runs/question_quality/DATA.JUDGE.jsonl)")
    p.add_argument("--prompt-file", help="judge prompt with a {conversation} placeholder")
    p.add_argument("--tokenizer", default="smollm2", help="tokenizer for the token statistics")
    p.add_argument("--api-key-env", default=DEFAULT_KEY_ENV)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON object here (for eval.tables)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = evaluate(args)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        from model.conversation import atomic_write

        atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1) + "\n"))
    print(json.dumps(result) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
