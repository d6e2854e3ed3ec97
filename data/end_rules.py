"""When a SocraticChat session ends, and how the simulator's tokens are counted for it.

``--end-rule`` names the rule (C = ``--max-context``, M = ``--max-new-tokens``):

* ``paper`` (default, as the original code did): the simulator writes the next question from the most
  recent ``W = C - M - 8`` tokens of the conversation (1,528 at the paper's 2048/512); while it
  writes, the *whole* conversation plus the question so far is counted, and once that exceeds C the
  question is dropped and the session ends. Every finished round is kept, so a session usually ends a
  little over C because of its last answer. A seeded session that ends with its seed round alone is
  skipped, not kept.
* ``fit`` (this project's earlier rule): the conversation and the next question must fit C together;
  when even the conversation so far does not fit, its last round is dropped too, so every kept session
  fits C. Seeded sessions with only their seed round are kept.
* ``learned``: the simulator ends the session itself by writing an end marker as its next question
  (``END_OF_CONVERSATION``, or ``<e>`` for the original's experiment: a Socratic trained with
  ``--end-token [--end-style original]``), once at least ``--min-turns`` rounds are done; the
  paper's budget still applies. Under the other rules (and before ``--min-turns``) the marker is
  suppressed: the question is asked again with another seed.

Counting: the conversation so far is the simulator's prompt, counted in the simulator's own tokens
(its tokenizer and template, as it is served). For a local simulator, or a remote one whose tokenizer
is known (``--simulator-tokenizer``, or the served checkpoint's path), the count is exact and the
window is applied by the server (``truncate_prompt_tokens``, vLLM's parameter, which model.serve
accepts too). Without a tokenizer the server's own usage figures are used and it sees the whole
conversation. The tokenizer tokenises as training did (``--tokenization``, model.dyadic.training_tokenizer).
``--budget-count original-server`` counts the budget as the original's generation server did instead: the
checkpoint's *fast* tokenizer of transformers 4.28 (model.dyadic.match_original_server: a ``▁`` piece before
every ``<s>``) and that server's system prompt, whose first sentence ends in a newline instead of a space;
what the simulator is given stays the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from core.conversation import HUMAN, Turn
from model.checkpoint import read_checkpoint
from model.dyadic import (END_MARKERS, SOCRATIC_SYSTEM, SYSTEM_PROMPTS, Template, match_original_server,
                          training_tokenizer)

END_RULES = ("paper", "fit", "learned")
BUDGET_COUNTS = ("training", "original-server")
WINDOW_MARGIN = 8  # the original: max_src_len = context_len - max_new_tokens - 8
# the original's generation server (data/produce_sample/backend/utils.py): Socratic's prompt, "\n" after "assistant."
ORIGINAL_SERVER_SYSTEM = SOCRATIC_SYSTEM.replace("assistant. The human", "assistant.\nThe human", 1)


@dataclass
class Question:
    text: str
    prompt_tokens: int  # the whole conversation so far, as the simulator's prompt
    completion_tokens: int  # the question, without its end-of-turn token
    finish_reason: str | None = "stop"
    input_tokens: int | None = None  # what the simulator was actually given (the window, when it applies)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class EndOfSession(Exception):
    """The session ends here; ``drop_last_round`` when the conversation itself no longer fits (``fit``)."""

    def __init__(self, reason: str, drop_last_round: bool = False):
        self.reason, self.drop_last_round = reason, drop_last_round
        super().__init__(reason)


def is_end_marker(text: str) -> bool:
    """The question is a learned end marker (the project's or the original's ``<e>``)."""
    return text.strip() in END_MARKERS


@dataclass(frozen=True)
class EndRule:
    name: str
    max_context: int
    max_new_tokens: int
    min_turns: int = 1

    def __post_init__(self):
        if self.name not in END_RULES:
            raise ValueError(f"unknown end rule {self.name!r}; choose one of {END_RULES}")

    @property
    def window(self) -> int | None:
        """How many of the latest prompt tokens the simulator sees (None: all of them)."""
        if self.name == "fit":
            return None
        return max(1, self.max_context - self.max_new_tokens - WINDOW_MARGIN)

    def visible(self, prompt_ids: list[int]) -> list[int]:
        """The part of the prompt the simulator is given: its latest ``window`` tokens."""
        return prompt_ids[-self.window:] if self.window else prompt_ids

    def context_full(self) -> EndOfSession:
        """The end when the simulator has no room left; under ``fit`` the last round goes too."""
        return EndOfSession("context_full", drop_last_round=self.name == "fit")

    def check_prompt(self, prompt_tokens: int) -> None:
        """Under ``fit`` a conversation that alone fills the budget ends the session before anything is asked."""
        if self.name == "fit" and prompt_tokens >= self.max_context:
            raise self.context_full()

    def check(self, q: Question) -> None:
        """Raise EndOfSession when the question ``q`` breaks the budget."""
        self.check_prompt(q.prompt_tokens)
        if q.truncated and q.completion_tokens < self.max_new_tokens:
            raise EndOfSession("context_full")  # the server's context, not max_new_tokens, cut it
        if q.prompt_tokens + q.completion_tokens > self.max_context:
            raise EndOfSession("context_full")

    def resample_reason(self, q: Question, rounds: int) -> str | None:
        """None to keep the question ``q``; else why it is asked again (an end marker the rule does not
        accept yet, or under ``fit`` an empty question). Raises EndOfSession where the session ends here:
        an accepted end marker, the budget, or (``paper``, as the original) an empty question."""
        if is_end_marker(q.text):
            if self.accepts_end(rounds):
                raise EndOfSession("learned_end")
            return "end_marker_suppressed"
        self.check(q)
        if q.text:
            return None
        if self.name != "fit":
            raise EndOfSession("empty_question")
        return "empty_question"

    def accepts_end(self, rounds: int) -> bool:
        return self.name == "learned" and rounds >= self.min_turns

    @property
    def keeps_seed_only(self) -> bool:
        return self.name == "fit"


class TokenCounter:
    """The simulator's count of its prompt (the conversation so far, as it is rendered for it) and of a text.

    ``budget``: another counter whose count of the prompt the session budget uses instead (``original-server``).
    """

    def __init__(self, tokenizer, template: str | Template = "dyadic", system: str | None = None,
                 budget: "TokenCounter | None" = None):
        self.tokenizer = tokenizer
        self.template = template if isinstance(template, Template) else Template(tokenizer, template)
        self.system = SYSTEM_PROMPTS[HUMAN] if system is None else system
        self.budget = budget

    @classmethod
    def load(cls, path: str, template: str | None = None, system: str | None = None,
             tokenization: str = "original", budget_count: str = "training") -> "TokenCounter":
        """The counter of the tokenizer at ``path`` as training tokenised with it (with the template and system
        prompt its checkpoint records unless given), and the budget's count."""
        from core.assets import resolve

        checkpoint = read_checkpoint(resolve(path))
        template = checkpoint.template_for(template)
        counter = cls(training_tokenizer(path, tokenization, template), template,
                      checkpoint.system_for(HUMAN) if system is None else system)
        if budget_count == "original-server":
            counter.budget = original_server_counter(path, template)
        return counter

    def prompt_ids(self, turns: Sequence[Turn], next_role: str = HUMAN, system: str | None = None) -> list[int]:
        """The prompt's ids, after ``system`` (default: the simulator's own prompt; a session's intent adds to it)."""
        text = self.template.prompt_for(turns, next_role, self.system if system is None else system)
        return self.tokenizer(text, add_special_tokens=self.template.add_special_tokens)["input_ids"]

    def budget_tokens(self, turns: Sequence[Turn], ids: Sequence[int] | None = None) -> int:
        """The conversation so far as the session budget counts it (``ids``: its prompt ids, when known)."""
        if self.budget is not None:
            return len(self.budget.prompt_ids(turns))
        return len(self.prompt_ids(turns) if ids is None else ids)

    def text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def original_server_counter(path: str, template: str = "dyadic") -> TokenCounter:
    """The budget as the original's generation server counted it: the fast tokenizer of transformers 4.28 and
    the server's system prompt (data/produce_sample/backend/inference.py: ``len(output_ids) > context_len``)."""
    from core.assets import load_tokenizer

    if template != "dyadic":
        raise ValueError("--budget-count original-server counts the dyadic template the original served")
    tokenizer = load_tokenizer(path)
    match_original_server(tokenizer)
    return TokenCounter(tokenizer, template, ORIGINAL_SERVER_SYSTEM)
