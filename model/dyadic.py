"""The dyadic prompt template and role-masked labels, shared by training, inference and data tools.

A conversation renders as::

    SYSTEM + "Human: " + BOS + text + EOS + "Assistant: " + BOS + text + EOS + ...

where BOS/EOS are the tokenizer's own ``bos_token``/``eos_token`` strings (``<s>``/``</s>`` for
LLaMA, which is exactly the released PlatoLM-7b / Socratic format). The two models differ only in
the role that carries the loss (Socratic: ``human``; PlatoLM: ``gpt``) and in the system prompt.

Labels: the rendered text is tokenized *once*, as ``tokenizer(text)`` does by default, and a token
is trained iff its character span lies inside a turn of the trained role, from the first character
of that turn's BOS to the last character of its EOS (one vectorised pass over the offset mapping).
The ``chat`` template uses the tokenizer's own chat template instead; there a trained span is a
message's content plus the end-of-turn marker that follows it.

Usage::

    python -m model.dyadic --tokenizer smollm2 --data convs.json --train-role human \\
        --out encoded.jsonl --show 2
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from model.conversation import (GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn,
                                TO_OPENAI_ROLE, atomic_write, iter_conversations)

SOCRATIC_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The human can ask "
    "further questions based on previous conversations, or he can directly ask brand new questions "
    "without any conversations as context.\n\n"
)
PLATOLM_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions.\n\n"
)
SYSTEM_PROMPTS = {HUMAN: SOCRATIC_SYSTEM, GPT: PLATOLM_SYSTEM}
ROLE_PREFIX = {HUMAN: "Human: ", GPT: "Assistant: "}
TEMPLATES = ("dyadic", "chat")
IGNORE_INDEX = -100
_SENTINEL = "\uE000PLATOLM_NEXT_TURN\uE000"  # private-use chars: never in real text


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int, str]]  # (start, end, role): the trainable region of every turn


class Template:
    """Renders turns to text with character spans, for one tokenizer and one template mode."""

    def __init__(self, tokenizer, template: str = "dyadic"):
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"template 'chat' needs a tokenizer with a chat template; "
                             f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')} has none "
                             f"(use --template dyadic)")
        if not tokenizer.eos_token:
            raise ValueError("the tokenizer has no eos_token; the dyadic template needs one")
        self.tokenizer, self.template = tokenizer, template
        self.bos, self.eos = tokenizer.bos_token or "", tokenizer.eos_token
        # chat mode: tokens that may close a turn, longest first
        self._markers = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)
        self._system_ok: bool | None = None
        # tokenize exactly as inference will: tokenizer(text) for dyadic; the chat template already
        # contains its own BOS, so it is tokenized without adding special tokens again
        self.add_special_tokens = template == "dyadic"

    # -- rendering ---------------------------------------------------------------------------
    def render(self, turns: Sequence[Turn], system: str) -> Rendered:
        if self.template == "dyadic":
            parts, spans, pos = [system], [], len(system)
            for t in turns:
                prefix = ROLE_PREFIX[t.role]
                body = self.bos + t.text + self.eos
                parts += [prefix, body]
                start = pos + len(prefix)
                spans.append((start, start + len(body), t.role))
                pos = start + len(body)
            return Rendered("".join(parts), spans)
        return self._render_chat(turns, system)

    def _apply_chat(self, messages: list[dict], system: str) -> str:
        tok = self.tokenizer
        if system and self._system_ok is not False:
            try:
                text = tok.apply_chat_template([{"role": "system", "content": system}, *messages],
                                               tokenize=False)
                self._system_ok = True
                return text
            except Exception as err:  # templates such as Gemma's reject a system role
                if self._system_ok is None:
                    print(f"warning: the chat template rejects a system message ({err}); "
                          f"rendering without one", file=sys.stderr)
                self._system_ok = False
        return tok.apply_chat_template(messages, tokenize=False)

    def _render_chat(self, turns: Sequence[Turn], system: str) -> Rendered:
        text = self._apply_chat([{"role": TO_OPENAI_ROLE[t.role], "content": t.text} for t in turns],
                                system)
        spans, pos = [], 0
        for t in turns:
            content = t.text
            start = text.find(content, pos)
            if start < 0:  # templates that trim message content
                content = t.text.strip()
                start = text.find(content, pos)
            if start < 0:
                raise BadRecord("<chat template>", "?", "chat template drops text",
                                "a message's content is not in the rendered text")
            end = start + len(content)
            for marker in self._markers:
                if text.startswith(marker, end):
                    end += len(marker)
                    break
            spans.append((start, end, t.role))
            pos = end
        return Rendered(text, spans)

    def prompt_for(self, turns: Sequence[Turn], next_role: str, system: str) -> str:
        """The text a model continues to write the next turn of ``next_role`` (after its BOS)."""
        text = self.render([*turns, Turn(next_role, _SENTINEL)], system).text
        return text[: text.index(_SENTINEL)]

    def stop_strings(self) -> list[str]:
        """Strings that end a generated turn."""
        if self.template == "dyadic":
            return [self.eos]
        probe = self.render([Turn(HUMAN, "a"), Turn(GPT, _SENTINEL)], "").text
        tail = probe[probe.index(_SENTINEL) + len(_SENTINEL):]
        return [m for m in self._markers if tail.startswith(m)][:1] or [self.eos]


def default_system(train_role: str, conv: Conversation | None = None, override: str | None = None) -> str:
    """The system prompt: an explicit override, else the record's own, else the role's paper prompt."""
    if override is not None:
        return override
    if conv is not None and conv.system is not None:
        return conv.system
    return SYSTEM_PROMPTS[train_role]


def labels_from_offsets(text: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]],
                        spans: Sequence[tuple[int, int, str]], train_role: str) -> list[int]:
    """One pass: label = id for tokens inside a trained span, IGNORE_INDEX elsewhere.

    Tokens with empty offsets (special tokens the tokenizer adds, such as a leading BOS) are never
    trained. When a tokenizer has no BOS, a token may carry the template's separating space into a
    turn (``" word"``); it counts as inside when only whitespace lies before the span.
    """
    ids_a = np.asarray(ids, dtype=np.int64)
    labels = np.full(len(ids_a), IGNORE_INDEX, dtype=np.int64)
    trained = [(s, e) for s, e, r in spans if r == train_role]
    if not trained or len(ids_a) == 0:
        return labels.tolist()
    offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offs[:, 0], offs[:, 1]
    span_s = np.array([s for s, _ in trained], dtype=np.int64)
    span_e = np.array([e for _, e in trained], dtype=np.int64)
    k = np.searchsorted(span_e, ends, side="left")  # first trained span ending at/after the token
    valid = k < len(span_e)
    kk = np.minimum(k, len(span_e) - 1)
    inside = valid & (ends > starts) & (ends > span_s[kk])
    straddle = np.flatnonzero(inside & (starts < span_s[kk]))
    inside[straddle] = [text[starts[i]:span_s[kk[i]]].isspace() for i in straddle]
    labels[inside] = ids_a[inside]
    return labels.tolist()


def labels_from_encoding(text: str, ids: list[int], encoding, spans: Sequence[tuple[int, int, str]],
                         train_role: str) -> list[int]:
    """The same rule as :func:`labels_from_offsets`, computed from each span's two boundary tokens.

    Looking up only the boundary tokens in the Rust ``Encoding`` (instead of converting every token's
    offsets to Python) keeps encoding within a small factor of a bare tokenizer call. Falls back to
    the per-token pass when a boundary character maps to no token (e.g. a normalizer removed it).
    """
    labels = [IGNORE_INDEX] * len(ids)
    for start, end, role in spans:
        if role != train_role:
            continue
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            return labels_from_offsets(text, ids, encoding.offsets, spans, train_role)
        tok_start = encoding.token_to_chars(first)[0]
        if tok_start < start and not text[tok_start:start].isspace():
            first += 1
        if encoding.token_to_chars(last)[1] > end:
            last -= 1
        labels[first:last + 1] = ids[first:last + 1]
    return labels


class Encoder:
    """Conversation -> {"id", "input_ids", "labels"} for one tokenizer, trained role and template."""

    def __init__(self, tokenizer, train_role: str, template: str = "dyadic",
                 max_length: int = 2048, system: str | None = None):
        if train_role not in (HUMAN, GPT):
            raise ValueError(f"train role must be {HUMAN!r} or {GPT!r}, not {train_role!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) tokenizer is needed for offset mapping")
        self.tokenizer, self.train_role, self.max_length = tokenizer, train_role, max_length
        self.template = Template(tokenizer, template)
        self.system = system

    def render(self, conv: Conversation) -> Rendered:
        return self.template.render(conv.turns, default_system(self.train_role, conv, self.system))

    def encode_many(self, convs: Iterable[Conversation], file: str = "<memory>",
                    batch_size: int = 256) -> Iterator[dict | BadRecord]:
        """Yield an encoded row, or the BadRecord explaining why a conversation was dropped, in order."""
        batch: list[Conversation] = []
        for conv in convs:
            batch.append(conv)
            if len(batch) == batch_size:
                yield from self._encode_batch(batch, file)
                batch = []
        if batch:
            yield from self._encode_batch(batch, file)

    def encode(self, conv: Conversation, file: str = "<memory>") -> dict:
        out = next(self._encode_batch([conv], file))
        if isinstance(out, BadRecord):
            raise out
        return out

    def _encode_batch(self, convs: list[Conversation], file: str) -> Iterator[dict | BadRecord]:
        rendered: list[Rendered | BadRecord] = []
        for conv in convs:
            if not any(t.role == self.train_role for t in conv.turns):
                rendered.append(BadRecord(file, conv.id, f"no {self.train_role} turn"))
                continue
            try:
                rendered.append(self.render(conv))
            except BadRecord as err:
                rendered.append(BadRecord(file, conv.id, err.reason, err.detail))
        texts = [r.text for r in rendered if isinstance(r, Rendered)]
        batch = self.tokenizer(texts, add_special_tokens=self.template.add_special_tokens) if texts else None
        j = 0
        for conv, r in zip(convs, rendered):
            if isinstance(r, BadRecord):
                yield r
                continue
            ids = batch["input_ids"][j]
            labels = labels_from_encoding(r.text, ids, batch.encodings[j], r.spans, self.train_role)
            j += 1
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            if all(x == IGNORE_INDEX for x in labels):
                yield BadRecord(file, conv.id, "no trained tokens within max_length",
                                f"max_length={self.max_length}")
                continue
            yield {"id": conv.id, "input_ids": list(ids), "labels": labels}


def show(row: dict, tokenizer, color: bool | None = None) -> str:
    """Render an encoded row for a person: trained tokens highlighted (green, or [[...]] without a tty)."""
    color = sys.stdout.isatty() if color is None else color
    ids, labels = row["input_ids"], row["labels"]
    out, i = [], 0
    while i < len(ids):
        trained = labels[i] != IGNORE_INDEX
        j = i
        while j < len(ids) and (labels[j] != IGNORE_INDEX) == trained:
            j += 1
        piece = tokenizer.decode(ids[i:j])
        if trained:
            piece = f"\033[42m\033[30m{piece}\033[0m" if color else f"[[{piece}]]"
        out.append(piece)
        i = j
    n_trained = sum(x != IGNORE_INDEX for x in labels)
    return f"--- {row['id']}: {len(ids)} tokens, {n_trained} trained ---\n" + "".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.dyadic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="tokenizer path, hub name, or 'smollm2'")
    p.add_argument("--data", required=True, help="ShareGPT or OpenAI-messages file (JSON array or JSONL)")
    p.add_argument("--train-role", required=True, choices=[HUMAN, GPT])
    p.add_argument("--template", default="dyadic", choices=TEMPLATES)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--system", default=None, help="override the system prompt")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--out", help="output JSONL: one {id, input_ids, labels} per kept conversation")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N encoded conversations")
    args = p.parse_args(argv)
    if not args.out and not args.show:
        p.error("give --out, --show N, or both")

    from model.assets import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    try:
        encoder = Encoder(tokenizer, args.train_role, args.template, args.max_length, args.system)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = BadRecordSummary()
    kept = shown = 0
    try:
        rows = encoder.encode_many(iter_conversations(args.data, args.strict, summary), args.data)

        def write(f):
            nonlocal kept, shown
            for row in rows:
                if isinstance(row, BadRecord):
                    if args.strict:
                        raise row
                    summary.add(row)
                    continue
                kept += 1
                if f is not None:
                    f.write(json.dumps(row) + "\n")
                if shown < args.show:
                    print(show(row, tokenizer) + "\n")
                    shown += 1
                    if f is None and shown == args.show:
                        return

        if args.out:
            atomic_write(args.out, write)
        else:
            write(None)
    except BadRecord as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"kept {kept} conversations" + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    print(summary.report(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
