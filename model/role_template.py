"""The chat template a ``--template chat`` checkpoint is saved with: the base model's own, serving the trained role.

Training renders a conversation with the base model's chat template (``model.dyadic.Template``, chat mode): an
optional system message (the record's own prompt, else the role's), then ``user`` = the human's turns and
``assistant`` = the assistant's. A server such as ``vllm serve`` or transformers' ``pipeline("text-generation")``
renders a request with the checkpoint's chat template instead, and the base template's generation prompt opens an
*assistant* turn, with the *base* model's default system prompt. The role template wraps the base template,
verbatim, so that a server renders what training rendered and the model writes its trained role:

* **System message.** A request's leading system message, whatever its text (a role prompt, or a role prompt
  plus an intent), is given to the base template exactly as training gives a record's own system prompt: an
  empty one means none, and none at all means the trained default (Socratic's or PlatoLM's prompt, or the
  ``--system`` of the run). A base template that refuses a system message gets none, as in training.
* **Generation prompt.** The next turn is opened the way ``Template.prompt_for`` (and so ``model.generate`` and
  ``model.serve``) opens it: the base template renders the conversation followed by a turn of the trained role
  whose text is a private-use sentinel, and the prompt is everything before the sentinel. For Socratic on a
  ChatML base that is ``<|im_start|>user\\n``; on a Llama-3 base ``<|start_header_id|>user<|end_header_id|>\\n\\n``.
  No table of template families is involved: the base template itself says how a turn opens.
* **Prefill.** transformers treats a conversation ending in an assistant message as a prefill to continue (its
  pipeline does so by default); a Socratic never writes assistant turns, so its template opens a user turn
  there too.

:func:`derive_role_template` learns from probe renderings of the base template whether it takes a system message
and whether it can open the trained role's turn after a message of that same role (a request ending in a user
message, for Socratic); where it cannot (templates that enforce alternating roles) the turn opens after an empty
message of the other role, and the returned notes say so. Where it cannot open the role's turn at all, no role
template is made. :func:`install_role_template` checks the result on probe conversations (the same text and
token ids as training, with the default, an empty and a longer, intent-carrying system prompt) before it writes it
into the tokenizer, as ``model.dyadic.install_chat_template`` does for the dyadic template.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.conversation import GPT, HUMAN, TO_OPENAI_ROLE, Turn, openai_messages
from model.dyadic import CONTINUE_TAG, ROLE_TEMPLATE_BASE, ROLE_TEMPLATE_MARK, Template, base_chat_template

SENTINEL = "\uE000PLATOLM_OPEN_TURN\uE000"  # private-use characters: never in real text
INTENT_PROBE = ("\n\nThe user's intent for this conversation: learn how to sort a list in Python, then ask about "
                "the cost of sorting.")  # a system text longer than the role's prompt, as an intent makes it

_WRAPPER = """\
@MARK@ (model/role_template.py): the base model's chat template, verbatim between `set platolm_rendered` and
`endset`, renders the messages as training did; the generation prompt opens a @NEXT@ turn. -#}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set platolm_system = messages[0]['content'] -%}
    {%- set platolm_turns = messages[1:] -%}
{%- else -%}
    {%- set platolm_system = @SYSTEM@ -%}
    {%- set platolm_turns = messages -%}
{%- endif -%}
{%- set platolm_prefill = @PREFILL_OPENS@ and platolm_turns and platolm_turns[-1]['role'] == 'assistant'
    and platolm_turns[-1]['content'] is string and platolm_turns[-1]['content'].endswith(@TAG@) -%}
{%- if platolm_prefill -%}
    {%- set platolm_turns = platolm_turns[:-1]
        + [{'role': 'assistant', 'content': platolm_turns[-1]['content'][:-@TAG_LEN@]}] -%}
{%- endif -%}
{%- set platolm_open = add_generation_prompt or platolm_prefill -%}
{%- if platolm_open -%}
    {%- if @SPACER@ and platolm_turns and platolm_turns[-1]['role'] == @NEXT@ -%}
        {%- set platolm_turns = platolm_turns + [{'role': @OTHER@, 'content': ''}] -%}
    {%- endif -%}
    {%- set platolm_turns = platolm_turns + [{'role': @NEXT@, 'content': @SENTINEL@}] -%}
{%- endif -%}
{%- if platolm_system and @SYSTEM_OK@ -%}
    {%- set platolm_turns = [{'role': 'system', 'content': platolm_system}] + platolm_turns -%}
{%- endif -%}
{%- set platolm_rendered %}@BASE_START@@BASE@@BASE_END@
{{- platolm_rendered.split(@SENTINEL@)[0] if platolm_open else platolm_rendered -}}
{%- if platolm_prefill %}{{ @TAG@ }}{% endif -%}"""


@dataclass
class RoleTemplate:
    """A derived role template and what it does beyond the plain rule (for the log and the model card)."""
    text: str
    notes: list[str] = field(default_factory=list)
    spacer: bool = False  # a turn of the other role, empty, goes between two turns of the trained role


def _render(tokenizer, base: str, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=base)
    except Exception:  # noqa: BLE001 - a template refusing the probe (raise_exception) is the answer
        return None


def _opens(tokenizer, base: str, system: list[dict], history: list[Turn], role: str) -> bool:
    """Whether the base template renders a ``role`` turn (the sentinel) after ``history``."""
    text = _render(tokenizer, base, [*system, *openai_messages([*history, Turn(role, SENTINEL)])])
    return text is not None and SENTINEL in text


def derive_role_template(tokenizer, role: str, system: str) -> RoleTemplate:
    """The base template (the tokenizer's, unwrapped) wrapped to serve ``role`` with ``system`` as the default.

    Raises ValueError when the base template has none or cannot open a ``role`` turn.
    """
    if role not in (HUMAN, GPT):
        raise ValueError(f"role must be {HUMAN!r} or {GPT!r}, not {role!r}")
    base = base_chat_template(getattr(tokenizer, "chat_template", None))
    if not base:
        raise ValueError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template")
    other = GPT if role == HUMAN else HUMAN
    notes = []
    system_ok = _render(tokenizer, base, [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi"}]) is not None
    if not system_ok:
        notes.append("the base template takes no system message: a request's system message is dropped, "
                     "as training dropped it")
    sys_msgs = [{"role": "system", "content": "Be brief."}] if system_ok else []
    q, a = Turn(HUMAN, "Hi"), Turn(GPT, "Hello")
    essential = [[], [q, a]] if role == HUMAN else [[q], [q, a, q]]
    if not all(_opens(tokenizer, base, sys_msgs, h, role) for h in essential):
        raise ValueError(f"the base chat template cannot open a {TO_OPENAI_ROLE[role]} turn")
    after_same = [q] if role == HUMAN else [q, a]
    spacer = not _opens(tokenizer, base, sys_msgs, after_same, role)
    if spacer:
        if not _opens(tokenizer, base, sys_msgs, [*after_same, Turn(other, "")], role):
            raise ValueError(f"the base chat template cannot open a {TO_OPENAI_ROLE[role]} turn after a "
                             f"{TO_OPENAI_ROLE[role]} message")
        mine, theirs = TO_OPENAI_ROLE[role], TO_OPENAI_ROLE[other]
        notes.append(f"the base template refuses two {mine} messages in a row: when a request ends in a {mine} "
                     f"message, an empty {theirs} message goes before the new {mine} turn")
    fill = {"@MARK@": ROLE_TEMPLATE_MARK, "@SYSTEM@": json.dumps(system), "@SYSTEM_OK@": _jinja(system_ok),
            "@PREFILL_OPENS@": _jinja(role == HUMAN), "@SPACER@": _jinja(spacer),
            "@NEXT@": json.dumps(TO_OPENAI_ROLE[role]), "@OTHER@": json.dumps(TO_OPENAI_ROLE[other]),
            "@TAG@": json.dumps(CONTINUE_TAG), "@TAG_LEN@": str(len(CONTINUE_TAG)),
            "@SENTINEL@": json.dumps(SENTINEL), "@BASE_START@": ROLE_TEMPLATE_BASE[0],
            "@BASE_END@": ROLE_TEMPLATE_BASE[1]}
    text = _WRAPPER
    for key, value in fill.items():
        text = text.replace(key, value)
    # Jinja drops one trailing newline of a template's source; inside the wrapper it would be kept
    return RoleTemplate(text.replace("@BASE@", base[:-1] if base.endswith("\n") else base), notes, spacer)


def _jinja(flag: bool) -> str:
    return "true" if flag else "false"


_PROBES = [
    [Turn(HUMAN, "Hello there, how are you?")],
    [Turn(HUMAN, "Hello there, how are you?"), Turn(GPT, "Fine, thanks! And you?")],
    [Turn(HUMAN, "Hello there, how are you?"), Turn(GPT, "Fine, thanks! And you?"),
     Turn(HUMAN, "Tell me about 东京 😀 and `x = 1`.\n  Indented {{ not jinja }}  ")],
]


def _expected(chat: Template, turns: list[Turn], role: str, system: str, prompt: bool, spacer: bool) -> str:
    """What training renders: the whole conversation, or the prompt for the next ``role`` turn."""
    if not prompt:
        return chat.render(turns, system).text
    if spacer and turns and turns[-1].role == role:
        turns = [*turns, Turn(GPT if role == HUMAN else HUMAN, "")]
    return chat.prompt_for(turns, role, system)


def check_role_template(tokenizer, derived: RoleTemplate, role: str, system: str) -> None:
    """Raise ValueError unless ``derived`` renders the probe conversations as training does (text and token ids):
    with the default, an empty and an intent-carrying system message, and without one; with and without the
    generation prompt."""
    chat = Template(tokenizer, "chat")
    cases = [([], True)] if role == HUMAN else []  # the simulator opens a conversation
    cases += [(turns, prompt) for turns in _PROBES for prompt in (False, True)]
    for turns, prompt in cases:
        for given in (system, "", system + INTENT_PROBE, *([None] if turns else [])):  # no messages: refused
            head = [] if given is None else [{"role": "system", "content": given}]
            served = tokenizer.apply_chat_template([*head, *openai_messages(turns)], tokenize=False,
                                                   add_generation_prompt=prompt, chat_template=derived.text)
            trained = _expected(chat, turns, role, system if given is None else given, prompt, derived.spacer)
            ids = tokenizer(served, add_special_tokens=False).input_ids
            if served != trained or ids != tokenizer(trained, add_special_tokens=False).input_ids:
                raise ValueError(f"the derived chat template renders {served!r} where training renders {trained!r}")


def install_role_template(tokenizer, role: str, system: str) -> list[str]:
    """Derive, check and write the role template into ``tokenizer``; returns its notes (ValueError if none fits)."""
    derived = derive_role_template(tokenizer, role, system)
    check_role_template(tokenizer, derived, role, system)
    tokenizer.chat_template = derived.text
    return derived.notes
