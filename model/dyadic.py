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

The dyadic format as a chat template (for servers that render one: ``vllm serve``, TGI,
``tokenizer.apply_chat_template``): :data:`PLATOLM_CHAT_TEMPLATE` and :data:`SOCRATIC_CHAT_TEMPLATE`
are Jinja strings that render OpenAI messages (an optional first ``system``, then ``user`` = the
human's turns and ``assistant`` = the assistant's turns, the convention of ``model.serve --role
human`` too) exactly as :class:`Template` renders the conversation, with the role's paper system
prompt when the request has none. PlatoLM's generation prompt opens an assistant turn
(``Assistant: <s>``); Socratic's opens a *human* turn (``Human: <s>``), so a plain ``vllm serve
SOCRATIC_CHECKPOINT`` writes the next question, also from a request with only a system message (the
free mode's opening; the template renders an empty message list too, which transformers'
``apply_chat_template`` refuses before rendering). Servers tokenise the rendered text without adding special
tokens, while :class:`Encoder` calls ``tokenizer(text)``; so the template starts with ``bos_token``
exactly when the tokenizer's post-processor adds one (LLaMA: yes; SmolLM2: no), which
:func:`dyadic_chat_template` decides per tokenizer and :func:`install_chat_template` checks on a probe
conversation (same token ids both ways) before writing it into the tokenizer. The trainer does that
for every ``--template dyadic`` run, so each saved checkpoint carries its role's template.

Tokenizer parity with the original (LLaMA's sentencepiece tokenizer). The original trained with the
*slow* ``LlamaTokenizer`` of transformers 4.28: the text is split at special tokens (``<s>``,
``</s>``, ...), the whitespace on both sides of each is dropped (the special tokens were re-added as
plain strings, which that version stripped around), every remaining piece is encoded by
sentencepiece with its dummy prefix (so a turn's first word is ``▁Word``), and ``<s>`` is prepended.
transformers 5 loads a LLaMA tokenizer as a fast Metaspace tokenizer that prefixes ``▁`` only at the
very start of the text (``legacy=False``) and keeps the space of ``"Human: "`` as its own ``▁`` token
before ``<s>``: the first token of every turn and of every role prefix differs from the original.
:func:`match_slow_llama` makes such a tokenizer give the slow tokenizer's ids (``▁`` prefix on every
piece, and ``<s>``/``</s>`` that absorb the whitespace around them); the trainer applies it by default
(``--tokenization original``) to dyadic runs, and the saved tokenizer keeps it; :func:`training_tokenizer` is
the one place that applies the option, for the trainer and for every tool that counts tokens for training
(``python -m model.dyadic --tokenization``, ``data.prepare split|stats|seeds``, the simulator's budget).
Tokenizers that are not sentencepiece-style (SmolLM2's byte-level BPE, the tests' tiny one) are left as they
are. A literal special-token string inside a message (``<s>`` in a question about LLaMA) is read as that special token,
by the original's tokenizer as by these (the whitespace around it dropped, as there); the trained span
still covers the whole turn. tests/test_tokenizer_parity.py checks ids *and* labels against sentencepiece
driven as the 4.28 slow tokenizer drove it, with the original ``preprocess``'s masking. (transformers 5's
own slow backend, ``SentencePieceBackend``, no longer strips around special tokens: it is no reference.)
The original's generation server used the *fast* tokenizer of its day (by our reading of its
``tokenizer.json``, a ``▁`` piece before each ``<s>``), so its Socratic saw slightly different ids at
generation than in training; here the saved tokenizer serves both.

Learned end of conversation: a Socratic trained with ``--end-token`` writes :data:`END_OF_CONVERSATION`
as the human's next turn after the last answer of a conversation that really ended
(:func:`really_ended`). ``--end-style original`` is the original's untested experiment instead
(:data:`LEARNED_ENDS`): the reply ``<e>``, one token added to the vocabulary, under its own system prompt.

Usage::

    python -m model.dyadic --tokenizer smollm2 --data convs.json --train-role human \\
        --out encoded.jsonl --show 2
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from core.conversation import (GPT, HUMAN, BadRecord, BadRecordSummary, Conversation, Turn,
                                atomic_write, iter_conversations, openai_messages, split_segment_id)
from core.errors import UsageError
from core.options import TEMPLATES
from core.runner import command

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
# The human turn a simulator trained with --end-token writes when the conversation is over (plain text:
# any server can return it, no special token is needed).
END_OF_CONVERSATION = "<|end_of_conversation|>"
# The original's untested experiment (model/sft_socratic/source/utils.py, `sft_usergpt_end_test`; the `<e>` token
# is commented out in its build_model): Socratic ends by replying <e>, under this system prompt (verbatim,
# with its missing space after "context.").
ORIGINAL_END_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The human can ask further questions "
    "based on assistant's answers above, or he can directly ask questions without context.When the human thinks "
    "that the assistant's answer is clear enough for him, the human will end the conversation by replying <e>, "
    "where <e> is a word that has no semantic meaning and simply means that the human considers that the "
    "conversation should end at this point.\n\n"
)


@dataclass(frozen=True)
class LearnedEnd:
    """How Socratic learns to end a conversation (trainer ``--end-token --end-style NAME``): the human turn it
    writes, whether that is one token added to the vocabulary (its embeddings start as the mean, like ``<pad>``),
    and the system prompt it trains and is simulated with (None: the role's own)."""
    marker: str
    added_token: bool = False
    system: str | None = None


LEARNED_ENDS = {"project": LearnedEnd(END_OF_CONVERSATION),
                "original": LearnedEnd("<e>", added_token=True, system=ORIGINAL_END_SYSTEM)}
END_MARKERS = frozenset(end.marker for end in LEARNED_ENDS.values())
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
        # chat mode renders with the base model's own template, also when a checkpoint's role template wraps it
        self.chat_template = base_chat_template(getattr(tokenizer, "chat_template", None))
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
                                               tokenize=False, chat_template=self.chat_template)
                self._system_ok = True
                return text
            except Exception as err:  # templates such as Gemma's reject a system role
                if self._system_ok is None:
                    print(f"warning: the chat template rejects a system message ({err}); "
                          f"rendering without one", file=sys.stderr)
                self._system_ok = False
        return tok.apply_chat_template(messages, tokenize=False, chat_template=self.chat_template)

    def _render_chat(self, turns: Sequence[Turn], system: str) -> Rendered:
        text = self._apply_chat(openai_messages(turns), system)
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


# A role template (model.role_template) embeds the base model's chat template verbatim between these two strings.
ROLE_TEMPLATE_MARK = "{#- PlatoLM role template"
ROLE_TEMPLATE_BASE = ("{% set messages = platolm_turns %}{% set add_generation_prompt = false %}\n", "{% endset -%}")


def base_chat_template(text: str | None) -> str | None:
    """The base model's own chat template: the one a role template wraps, else ``text`` itself."""
    if not text or not text.startswith(ROLE_TEMPLATE_MARK):
        return text
    start, end = ROLE_TEMPLATE_BASE
    return text.split(start, 1)[1].rsplit(end, 1)[0]


INTENT_LABEL, PERSONA_LABEL = "Intent: ", "Persona: "


def intent_system(intent: str | None, persona: str | None = None, base: str = SOCRATIC_SYSTEM) -> str:
    """Socratic's system prompt conditioned on what the person wants (and how they write).

    The one form, shared by training (``--condition intent``), simulation (``data.simulate --intents``) and
    serving (a request's system message, rendered verbatim by the saved chat template)::

        base + "Intent: " + intent + "\\n\\n" [+ "Persona: " + persona + "\\n\\n"]

    ``base`` is the paper's prompt by default, which ends in a blank line, so each added paragraph ends in
    one too and ``Human: `` follows a blank line as before. Without an intent the prompt is exactly ``base``
    (a persona alone adds nothing: one checkpoint serves conditioned and free generation). The intent and
    persona are stripped; an intent that is empty after stripping is an error, never a silent free prompt.
    """
    if intent is None:
        return base
    if not isinstance(intent, str) or not intent.strip():
        raise ValueError(f"an intent must be a non-empty string, not {intent!r}")
    text = f"{base}{INTENT_LABEL}{intent.strip()}\n\n"
    if persona is not None and persona.strip():
        text += f"{PERSONA_LABEL}{persona.strip()}\n\n"
    return text


CONDITIONS = ("intent", "intent,persona")  # the trainer's and eval.simulator perplexity's --condition


def record_intent(fields: dict, record, file: str = "<memory>") -> tuple[str | None, str | None]:
    """A record's ``intent`` and ``persona`` (top-level fields), stripped; None where a field is absent.

    A field that is present but not a string, or blank, is a BadRecord naming the file, record and reason:
    never a silently unconditioned prompt.
    """
    values = []
    for name in ("intent", "persona"):
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRecord(file, record, f"{name} not a string", type(value).__name__)
        if value is not None and not value.strip():
            raise BadRecord(file, record, f"empty {name}")
        values.append(value.strip() if value is not None else None)
    return values[0], values[1]


def conditioned_system(conv: Conversation, base: str, condition: str | None, file: str = "<memory>") -> str:
    """The system prompt of ``conv`` under ``--condition`` (:data:`CONDITIONS`): ``intent_system`` of the
    record's intent (and, for ``intent,persona``, its persona) after ``base``; ``base`` itself for a record
    without an intent, so one checkpoint serves conditioned and free generation."""
    if not condition:
        return base
    intent, persona = record_intent(conv.extra, conv.id, file)
    return intent_system(intent, persona if "persona" in condition.split(",") else None, base)


def default_system(train_role: str, conv: Conversation | None = None, override: str | None = None) -> str:
    """The system prompt: an explicit override, else the record's own, else the role's paper prompt."""
    if override is not None:
        return override
    if conv is not None and conv.system is not None:
        return conv.system
    return SYSTEM_PROMPTS[train_role]


# -- the dyadic format as a chat template ---------------------------------------------------------

_CHAT_TEMPLATE_SKELETON = """\
{#- PlatoLM's dyadic format (model.dyadic): `user` = the human's turns, `assistant` = the assistant's -#}
{%- set bos = bos_token if bos_token is defined and bos_token else '' -%}
{%- set eos = eos_token if eos_token is defined and eos_token else '' -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system = @SYSTEM@ -%}
    {%- set turns = messages -%}
{%- endif -%}
{#- a prefill (transformers' continue_final_message) of an assistant turn: Socratic opens a human turn after it -#}
{%- set prefill = @PREFILL_OPENS@ and turns and turns[-1]['role'] == 'assistant'
    and turns[-1]['content'] is string and turns[-1]['content'].endswith(@TAG@) -%}
@LEADING_BOS@{{- system -}}
{%- for m in turns -%}
    {%- set content = m['content'][:-@TAG_LEN@] if prefill and loop.last else m['content'] -%}
    {%- if m['role'] == 'user' -%}
        {{- @HUMAN@ + bos + content + eos -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- @GPT@ + bos + content + eos -}}
    {%- else -%}
        {{- raise_exception('the dyadic template takes user and assistant messages after an optional first '
                            ~ 'system message, not ' ~ m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt or prefill -%}
    {{- @NEXT@ + bos -}}
{%- endif -%}
{%- if prefill %}{{ @TAG@ }}{% endif -%}"""
_LEADING_BOS = "{{- bos -}}\n"
# transformers marks the message to continue by appending this to it (render_jinja_template, continue_final_message)
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _chat_template(role: str, leading_bos: bool) -> str:
    """The skeleton filled in for the model that writes ``role`` turns (JSON strings are Jinja literals)."""
    fill = {"@SYSTEM@": json.dumps(SYSTEM_PROMPTS[role]), "@HUMAN@": json.dumps(ROLE_PREFIX[HUMAN]),
            "@GPT@": json.dumps(ROLE_PREFIX[GPT]), "@NEXT@": json.dumps(ROLE_PREFIX[role]),
            "@LEADING_BOS@": _LEADING_BOS if leading_bos else "",
            "@PREFILL_OPENS@": "true" if role == HUMAN else "false",
            "@TAG@": json.dumps(CONTINUE_TAG), "@TAG_LEN@": str(len(CONTINUE_TAG))}
    text = _CHAT_TEMPLATE_SKELETON
    for key, value in fill.items():
        text = text.replace(key, value)
    return text


# Named templates, for tokenizers that add <s> themselves (LLaMA, the paper's): PlatoLM's generation prompt
# opens an assistant turn, Socratic's a human turn.
PLATOLM_CHAT_TEMPLATE = _chat_template(GPT, leading_bos=True)
SOCRATIC_CHAT_TEMPLATE = _chat_template(HUMAN, leading_bos=True)
CHAT_TEMPLATES = {"platolm": PLATOLM_CHAT_TEMPLATE, "socratic": SOCRATIC_CHAT_TEMPLATE}


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer(text)`` puts the BOS token in front of the text by itself (LLaMA: yes)."""
    bos = tokenizer.bos_token_id
    added = tokenizer("a").input_ids[:1] == [bos] and tokenizer("a", add_special_tokens=False).input_ids[:1] != [bos]
    return bos is not None and added


def dyadic_chat_template(role: str, tokenizer=None) -> str:
    """The chat template of the model that writes ``role`` turns; with a tokenizer, its own BOS rule decides
    whether it starts with ``bos_token`` (without one, it does: LLaMA's rule)."""
    if role not in (HUMAN, GPT):
        raise ValueError(f"role must be {HUMAN!r} or {GPT!r}, not {role!r}")
    return _chat_template(role, tokenizer is None or tokenizer_adds_bos(tokenizer))


_PROBE = [Turn(HUMAN, "Hello there, how are you?"), Turn(GPT, "Fine, thanks! And you?"),
          Turn(HUMAN, "Tell me about 东京 😀 and `x = 1`.")]


def install_chat_template(tokenizer, role: str) -> str:
    """Write the role's dyadic chat template into ``tokenizer``, after checking that it gives the token ids
    the dyadic :class:`Template` gives (whole conversation and generation prompt); returns the template."""
    template = dyadic_chat_template(role, tokenizer=tokenizer)
    dyadic = Template(tokenizer)
    system = SYSTEM_PROMPTS[role]
    history = _PROBE if role == GPT else _PROBE[:2]
    messages = openai_messages(history)
    pairs = [(dict(conversation=messages), dyadic.render(history, system).text),
             (dict(conversation=messages, add_generation_prompt=True), dyadic.prompt_for(history, role, system))]
    for kwargs, text in pairs:
        rendered = tokenizer.apply_chat_template(**kwargs, tokenize=False, chat_template=template)
        served = tokenizer(rendered, add_special_tokens=False).input_ids
        if served != tokenizer(text).input_ids:
            raise ValueError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')}: the dyadic chat template "
                             f"does not reproduce the dyadic token ids ({rendered!r}); the tokenizer treats text "
                             f"after a special token differently (see model.dyadic.match_slow_llama)")
    tokenizer.chat_template = template
    return template


# -- tokenizer parity with the original's slow LLaMA tokenizer ----------------------------------------

TOKENIZATIONS = ("original", "as_loaded")  # the trainer's --tokenization, and every tool that counts for it


def _legacy_metaspace(tokenizer, strip_around_specials: bool) -> bool:
    """``▁`` before every piece between special tokens; special tokens that absorb the whitespace next to
    them or not. False (nothing changed) for a tokenizer that is not sentencepiece-style (Metaspace)."""
    from tokenizers import AddedToken, pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if not isinstance(pre, pre_tokenizers.Metaspace):
        return False
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=pre.replacement, prepend_scheme="always",
                                                     split=pre.split)
    tokenizer.legacy = True
    tokenizer.init_kwargs["legacy"] = True  # transformers rebuilds the pre-tokenizer from it on loading
    strip = strip_around_specials
    backend.add_special_tokens([AddedToken(t, lstrip=strip, rstrip=strip, special=True, normalized=False)
                                for t in tokenizer.all_special_tokens])
    return True


def match_slow_llama(tokenizer) -> bool:
    """Make a sentencepiece-style (Metaspace) fast tokenizer tokenise as the original's slow one; True if changed.

    Every piece between special tokens gets sentencepiece's ``▁`` prefix (``legacy`` Metaspace, saved in
    the tokenizer's config), and the special tokens (``<s>``, ``</s>``, ``<unk>``, an added ``<pad>``) absorb
    the whitespace on both sides, as transformers 4.28 stripped it around special tokens the original re-added
    as plain strings. Other tokenizers (byte-level BPE ...) are left alone.
    """
    return _legacy_metaspace(tokenizer, strip_around_specials=True)


def match_original_server(tokenizer) -> bool:
    """Make a sentencepiece-style tokenizer count as the original's generation server did; True if changed.

    That server loaded the Socratic checkpoint with transformers 4.28's *fast* tokenizer: ``▁`` before every
    piece, as the slow one, but the whitespace next to a special token kept (``"Human: <s>"`` has a ``▁`` piece
    before ``<s>``). Used only to count the session budget as the original did (data.simulate
    ``--budget-count original-server``); training and generation use :func:`training_tokenizer`.
    """
    return _legacy_metaspace(tokenizer, strip_around_specials=False)


def training_tokenizer(tokenizer, tokenization: str = "original", template: str = "dyadic"):
    """The tokenizer exactly as training tokenises with it under ``--tokenization`` (the trainer's option and
    default): ``original`` gives a sentencepiece-style tokenizer the original's slow LLaMA ids
    (:func:`match_slow_llama`) for the dyadic template; ``as_loaded`` and other tokenizers stay as loaded.

    ``tokenizer`` is a tokenizer (adjusted in place) or a path, hub name or ``smollm2`` (loaded). The trainer,
    ``python -m model.dyadic``, ``data.prepare split|stats|seeds`` and the simulator's budget all come here,
    so a length counted before training is the length training encodes.
    """
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"unknown tokenization {tokenization!r}; choose one of {TOKENIZATIONS}")
    if isinstance(tokenizer, (str, Path)):
        from core.assets import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    if template == "dyadic" and tokenization == "original":
        match_slow_llama(tokenizer)
    return tokenizer


def tokenises_as_slow_llama(tokenizer) -> bool:
    """Whether ``tokenizer`` now gives the original slow LLaMA tokenizer's ids (:func:`match_slow_llama` ran)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if getattr(getattr(backend, "pre_tokenizer", None), "prepend_scheme", None) != "always":
        return False
    eos = next((t for t in backend.get_added_tokens_decoder().values() if t.content == tokenizer.eos_token), None)
    return eos is not None and eos.lstrip and eos.rstrip


def describe_tokenization(tokenizer, tokenization: str) -> str:
    """One line for reports: which tokenization a length was counted in."""
    if tokenises_as_slow_llama(tokenizer):
        return f"tokenization {tokenization}: the original's slow LLaMA tokenizer's ids"
    return f"tokenization {tokenization}: the tokenizer as loaded"


# -- learned end of conversation -----------------------------------------------------------------

LEARNED_END = "learned_end"  # the end_reason data.simulate records when the simulator wrote END_OF_CONVERSATION


def _segment_chain(cid: str) -> list[tuple[str, int]]:
    """``"X_3_1"`` -> [("X_3", 1), ("X", 3)]: every (base, segment number) its id nests."""
    chain = []
    base, k = split_segment_id(cid)
    while k is not None:
        chain.append((base, k))
        base, k = split_segment_id(base)
    return chain


def really_ended(convs: Sequence[Conversation]) -> list[bool]:
    """Which conversations of one file really ended (a simulator learns to end after their last answer).

    A record that says so (``"ended": true|false``) is believed. A simulated SocraticChat session (it has an
    ``end_reason``) ended only if the simulator ended it (:data:`LEARNED_END`); the others were cut by the
    context budget. Otherwise an id without a segment suffix ended, and a segment ``<id>_<k>`` ended when
    it is the file's last segment of ``<id>`` (largest k) at every level of nesting (``data.split`` appends
    ``_<k>`` to ShareGPT ids that are segments already: ``X_0_1`` is last only if ``X_1`` is absent too).
    """
    last: dict[str, int] = {}
    for conv in convs:
        for base, k in _segment_chain(conv.id):
            last[base] = max(k, last.get(base, k))
    out = []
    for conv in convs:
        if isinstance(conv.extra.get("ended"), bool):
            out.append(conv.extra["ended"])
        elif "end_reason" in conv.extra:
            out.append(conv.extra["end_reason"] == LEARNED_END)
        else:
            out.append(all(k == last[base] for base, k in _segment_chain(conv.id)))
    return out


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


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.dyadic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="tokenizer path, hub name, or 'smollm2'")
    p.add_argument("--data", required=True, help="ShareGPT or OpenAI-messages file (JSON array or JSONL)")
    p.add_argument("--train-role", required=True, choices=[HUMAN, GPT])
    p.add_argument("--template", default="dyadic", choices=TEMPLATES)
    p.add_argument("--tokenization", default="original", choices=TOKENIZATIONS,
                   help="as the trainer's --tokenization (default original: a LLaMA-style tokenizer gives the "
                        "original's slow-tokenizer ids; as_loaded: as transformers loads it)")
    p.add_argument("--max-length", type=int, default=2048,
                   help="tokens per conversation, as the trainer's --max-length (default 2048)")
    p.add_argument("--system", default=None, help="override the system prompt")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--out", help="output JSONL: one {id, input_ids, labels} per kept conversation")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N encoded conversations")
    args = p.parse_args(argv)
    if not args.out and not args.show:
        p.error("give --out, --show N, or both")

    if not Path(args.data).is_file():
        raise UsageError(f"{args.data}: no such file")
    encoder = Encoder(training_tokenizer(args.tokenizer, args.tokenization, args.template), args.train_role,
                      args.template, args.max_length, args.system)
    tokenizer = encoder.tokenizer
    summary = BadRecordSummary()
    kept = shown = 0
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
    print(f"kept {kept} conversations" + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    print(summary.report(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
