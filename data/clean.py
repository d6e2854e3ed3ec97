"""The ShareGPT cleaning chain, one conversation at a time, with a count of what each step removed.

The default chain follows FastChat's ``clean_sharegpt`` and ``optional_clean`` (Vicuna's cleaning, which
the original code adapted), with a language classifier, in this order:

1. roles: leading assistant turns and a trailing unanswered human turn are trimmed; a conversation
   whose roles do not alternate is dropped.
2. html: turns that are HTML (the raw dump's assistant turns) become Markdown with markdownify;
   code blocks keep their language (from the ``language-xxx`` class) and lose the "Copy code"
   button; ShareGPT UI noise ("1 / 2" regenerate counters, "Copy N chars / N words", empty code
   blocks) is removed from every turn. Plain text and Markdown turns are not escaped, so an
   already-cleaned file (ShareGPT V3) passes through unchanged. The "1 / 2" counter is removed from
   assistant turns only (where the UI put it), so "1 / 2 cup of flour?" stays intact. A turn that is empty afterwards
   ends the conversation there (as the original did).
3. too short: fewer than two turns left after step 1 (a turn that the html step emptied counts there).
4. ai mentions: any turn naming the AI vendor/product the original filtered ("openai", "chatgpt").
5. language: the language of the conversation's prose (code blocks removed), by py3langid.
6. duplicates: exact duplicates of an earlier conversation's turns (roles and texts).

``rules="paper"`` (``clean --rules paper``) applies the original PlatoLM code's rules instead
(``remove_html.py`` and ``clean_sharegpt.ipynb``), in its order (the notebook's steps 2 and 3):

1. too short: one turn or none.
2. ai mentions: any raw turn naming "openai" or "chatgpt".
3. html: every turn through markdownify with its default options (so ``_`` and ``*`` in plain text
   are escaped too), after removing ``<div>``/``<span>`` tags; the same UI noise removed; a conversion
   error drops the conversation; a turn the conversion empties ends the conversation before it (an empty
   turn cannot be written; the original kept it). Roles are not touched.
4. language: dropped if any turn holds a character in U+0080-U+FFFF, unless a human turn asks for a
   translation (``\b[Tt]ranslat\w+``).

Whole conversations are not de-duplicated under these rules: the original split next (its step 4), dropped
one-turn segments (5) and then de-duplicated *segments* on their concatenated texts (6), which
``data.prepare split`` does (data/split.py, its defaults).
"""
from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from typing import Iterable, Iterator

from core.conversation import GPT, HUMAN, Conversation, Turn

BLOCKED_WORDS = ("openai", "chatgpt")
STEPS = {"default": ("roles", "html", "too short", "ai mentions", "language", "duplicates"),
         "paper": ("too short", "ai mentions", "html", "language")}
PAPER_NEXT = ("the original's steps 4-6 come next, in data.prepare split: split, one-turn segments dropped, "
              "duplicate segments (same concatenated texts) dropped")
RULES = tuple(STEPS)

_HTML_START = re.compile(r"^\s*<(div|p|pre|ol|ul|table|h[1-6]|blockquote|span|code|br|hr)\b[^>]*>", re.I)
_REGENERATE = re.compile(r"^\s*\d+\s*/\s*\d+")
_COPY_CHARS = re.compile(r"Copy\d+ chars / \d+ words")
_CODE_LANG = re.compile(r"```\s*(.*?)(?:Copy code)+(.+?)\s*?```", re.DOTALL)
_EMPTY_CODE = re.compile(r"```(.*?)Copy code\s*```")
_FENCED = re.compile(r"```.*?(```|$)", re.DOTALL)
_LANG_CLASS = re.compile(r"^(?:language|lang)-(.+)$")
# the original's patterns (remove_html.py, clean_sharegpt.ipynb)
_TAG_DIV_SPAN = re.compile("<div.*?>|<span.*?>")
_PAPER_REGENERATE = re.compile(r"\d+ / \d+")
_TRANSLATION = re.compile(r"\b[Tt]ranslat\w+")
_NON_ASCII_BMP = re.compile("[\u0080-\uFFFF]")


def _code_language(pre) -> str:
    """The language of a <pre> block: a language-xxx class on its <code>, else the header label."""
    code = pre.find("code")
    for el in (code, pre):
        for cls in (el.get("class") or []) if el is not None else []:
            m = _LANG_CLASS.match(cls)
            if m:
                return m.group(1)
    return ""


def html_to_markdown(html: str) -> str:
    """One HTML turn -> Markdown, code blocks fenced with their language and without the UI button."""
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(html, "html.parser")
    for pre in soup.find_all("pre"):
        code = pre.find("code")
        lang = _code_language(pre)
        text = code.get_text() if code is not None else pre.get_text()
        fresh = soup.new_tag("pre")
        inner = soup.new_tag("code", attrs={"class": f"language-{lang}"} if lang else {})
        inner.string = text
        fresh.append(inner)
        pre.replace_with(fresh)
    for tag in soup.find_all(["button", "svg"]):  # the "Copy code" button and its icon
        tag.decompose()
    converter = MarkdownConverter(escape_asterisks=False, escape_underscores=False, escape_misc=False,
                                  heading_style="ATX", code_language_callback=_code_language)
    return converter.convert_soup(soup).strip()


def remove_noise(text: str, assistant: bool = True) -> str:
    """ShareGPT UI leftovers: "Copy code" inside fenced blocks, copy counters, and (assistant turns only,
    where the UI put them; a question may well start with "1 / 2 cup") leading "1 / 2" regenerate counters."""
    text = _CODE_LANG.sub(lambda m: f"```{m.group(1).strip()}\n{m.group(2).strip(chr(10))}\n```", text)
    if assistant:
        text = _REGENERATE.sub("", text, count=1)
    text = _COPY_CHARS.sub("", text)
    text = _EMPTY_CODE.sub("", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def paper_html_to_markdown(text: str) -> str:
    """The original's conversion of one turn: markdownify's defaults on every turn, HTML or not."""
    import markdownify

    text = markdownify.markdownify(_TAG_DIV_SPAN.sub("", text)).strip()
    text = _CODE_LANG.sub("```\\g<1>\n\\g<2>\n```", text)
    noise = _PAPER_REGENERATE.match(text)
    if noise:
        text = text[noise.end():]
    text = _EMPTY_CODE.sub("", _COPY_CHARS.sub("", text))
    return text.replace("\n\n\n", "\n").strip()


def paper_language_ok(turns: list[Turn]) -> bool | str:
    """The original's language filter: "translation" for the exception, else whether the text is ASCII
    up to U+007F (a character in U+0080-U+FFFF anywhere drops the conversation; emoji above do not)."""
    if any(_TRANSLATION.search(t.text) for t in turns if t.role == HUMAN):
        return "translation"
    return not any(_NON_ASCII_BMP.search(t.text) for t in turns)


def clean_text(text: str, assistant: bool = True) -> str:
    if _HTML_START.match(text):
        text = html_to_markdown(text)
    return remove_noise(text, assistant)


def fix_roles(turns: list[Turn]) -> list[Turn] | None:
    """Trim leading assistant turns and a trailing human turn; None when the roles do not alternate."""
    start = next((i for i, t in enumerate(turns) if t.role == HUMAN), len(turns))
    turns = turns[start:]
    if turns and turns[-1].role == HUMAN:
        turns = turns[:-1]
    if any(t.role != (HUMAN, GPT)[i % 2] for i, t in enumerate(turns)):
        return None
    return turns


def prose(turns: Iterable[Turn], limit: int = 2000) -> str:
    """The conversation's text without code blocks, capped for a fast language check."""
    out, n = [], 0
    for t in turns:
        piece = _FENCED.sub(" ", t.text)
        out.append(piece)
        n += len(piece)
        if n >= limit:
            break
    return " ".join(out)[:limit]


def detect_language(text: str) -> str:
    import py3langid

    return py3langid.classify(text)[0] if text.strip() else "unknown"


def mentions_ai(turns: Iterable[Turn], words: Iterable[str] = BLOCKED_WORDS) -> bool:
    return any(w in t.text.lower() for t in turns for w in words)


def fingerprint(turns: Iterable[Turn], roles: bool = True) -> bytes:
    """A 16-byte digest of the roles and texts: duplicate detection keeps only these in memory.

    ``roles=False`` is the original's key: the turn texts concatenated, no roles and no separator.
    """
    h = hashlib.blake2b(digest_size=16)
    for t in turns:
        if roles:
            h.update(t.role.encode() + b"\x00")
        h.update(t.text.encode("utf-8", "surrogatepass"))
        if roles:
            h.update(b"\x01")
    return h.digest()


class Cleaner:
    """Runs the chain of ``rules`` over a stream; ``removed[step]`` counts what each step dropped."""

    def __init__(self, lang: str | None = "en", keep_ai_mentions: bool = False, rules: str = "default"):
        if rules not in RULES:
            raise ValueError(f"unknown cleaning rules {rules!r}; choose one of {RULES}")
        self.lang, self.keep_ai_mentions, self.rules = lang, keep_ai_mentions, rules
        self.steps = STEPS[rules]
        self.removed: Counter[str] = Counter()
        self.seen: set[bytes] = set()
        self.read = self.kept = self.translations = 0

    def clean_one(self, conv: Conversation) -> Conversation | str:
        """The cleaned conversation, or the name of the step that removed it."""
        turns = self._paper(conv.turns) if self.rules == "paper" else self._default(conv.turns)
        if isinstance(turns, str):
            return turns
        if "duplicates" in self.steps:
            key = self._key(turns)
            if key in self.seen:
                return "duplicates"
            self.seen.add(key)
        return Conversation(conv.id, turns, conv.system, conv.extra)

    def _default(self, turns: list[Turn]) -> list[Turn] | str:
        turns = fix_roles(turns)
        if turns is None:
            return "roles"
        if len(turns) < 2:
            return "too short"
        cleaned = []
        for t in turns:
            text = clean_text(t.text, assistant=t.role == GPT)
            if not text or not text[0].isprintable():
                break
            cleaned.append(Turn(t.role, text))
        cleaned = cleaned[: len(cleaned) // 2 * 2]
        if len(cleaned) < 2:  # a turn became empty: the conversation ended there
            return "html"
        if not self.keep_ai_mentions and mentions_ai(cleaned):
            return "ai mentions"
        if self.lang and detect_language(prose(cleaned)) != self.lang:
            return "language"
        return cleaned

    def _paper(self, turns: list[Turn]) -> list[Turn] | str:
        from bs4.builder import ParserRejectedMarkup

        if len(turns) <= 1:
            return "too short"
        if not self.keep_ai_mentions and mentions_ai(turns):  # the raw text, as the original checked it
            return "ai mentions"
        try:
            texts = [paper_html_to_markdown(t.text) for t in turns]
        except (ParserRejectedMarkup, AssertionError):
            return "html"
        # a turn left empty cannot be written as a turn: the conversation ends before it
        texts = list(itertools.takewhile(bool, texts))
        if len(texts) < 2:
            return "html"
        cleaned = [Turn(t.role, text) for t, text in zip(turns, texts)]
        verdict = paper_language_ok(cleaned)
        if not verdict:
            return "language"
        self.translations += verdict == "translation"
        return cleaned

    def run(self, convs: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in convs:
            self.read += 1
            out = self.clean_one(conv)
            if isinstance(out, str):
                self.removed[out] += 1
                continue
            self.kept += 1
            yield out

    def state(self) -> dict:
        return {"read": self.read, "kept": self.kept, "removed": dict(self.removed), "translations": self.translations}

    def restore(self, state: dict, written: Iterable[Conversation]) -> None:
        """Continue a resumed run: its counters, and the duplicate filter rebuilt from its output."""
        self.read, self.kept, self.removed = state["read"], state["kept"], Counter(state["removed"])
        self.translations = state.get("translations", 0)
        self.seen = {self._key(c.turns) for c in written} if "duplicates" in self.steps else set()

    def _key(self, turns: list[Turn]) -> bytes:
        """The duplicate key of the default chain: roles and texts."""
        return fingerprint(turns)

    def table(self, bad_records: int = 0) -> str:
        """Records removed by each step, and how many were left after it."""
        left = self.read
        lines = [f"{'step':<14}{'removed':>10}{'left':>10}", f"{'read':<14}{'':>10}{left + bad_records:>10}"]
        if bad_records:
            lines.append(f"{'bad records':<14}{bad_records:>10}{left:>10}")
        for step in self.steps:
            left -= self.removed[step]
            lines.append(f"{step:<14}{self.removed[step]:>10}{left:>10}")
        if self.rules == "paper":
            lines.append(f"({self.translations} kept by the translation exception of the language step; "
                         f"{PAPER_NEXT})")
        return "\n".join(lines)

    def counts(self, bad_records: int = 0) -> dict:
        extra = {"translation exceptions": self.translations} if self.rules == "paper" else {}
        return {"read": self.read + bad_records, "bad records": bad_records,
                **{s: self.removed[s] for s in self.steps}, "kept": self.kept, **extra}
