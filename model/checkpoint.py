"""What a checkpoint the trainer saved says about itself: its run record, and the model card rendered from it.

The trainer writes ``platolm_run.json`` (the run record) and ``README.md`` (a model card, the Hugging Face
convention, rendered from the record) into its output directory and into every ``checkpoint-N`` it saves.
:func:`read_checkpoint` is the one reader of the record: every command that loads a checkpoint (the chat CLIs,
``model.serve``, ``data.simulate`` with a local simulator or a served checkpoint whose directory is on this
machine, ``eval.simulator``, ``eval.mt_bench answer``, ``eval.alpaca_eval generate``, and the trainer when it
resumes or continues) takes the template, the trained role and its system prompt from it unless told otherwise.
An explicit ``--template`` that contradicts the record is used, with a warning naming both. A model without a
record (a base model, a hub name, ``smollm2``) keeps the defaults: the dyadic template, each role's paper prompt.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.conversation import GPT, HUMAN, atomic_write
from core.errors import UsageError
from core.options import TEMPLATES
from model.dyadic import SYSTEM_PROMPTS

RUN_RECORD = "platolm_run.json"
MODEL_CARD = "README.md"
DEFAULT_TEMPLATE = "dyadic"  # a model without a record
MODEL_NAMES = {HUMAN: "Socratic", GPT: "PlatoLM"}
# the record's "chat_template": the role whose turn the saved template opens (None: the base template, unchanged)
CHAT_TEMPLATE_NAMES = {HUMAN: "socratic", GPT: "platolm"}
CHAT_TEMPLATE_ROLES = {name: role for role, name in CHAT_TEMPLATE_NAMES.items()}


@dataclass(frozen=True)
class Checkpoint:
    """How to prompt a model: what its record says, else the defaults."""
    record_file: Path | None  # None: the model has no record
    template: str  # "dyadic" | "chat"
    role: str | None  # the turns it was trained to write: HUMAN (Socratic) or GPT (PlatoLM); None without a record
    system: str | None  # the system prompt it was trained with, the default of a request without one
    record: dict = field(default_factory=dict, repr=False)

    def system_for(self, role: str) -> str:
        """The system prompt for writing ``role`` turns: the trained one for the trained role, else the paper's."""
        return self.system if role == self.role and self.system is not None else SYSTEM_PROMPTS[role]

    @property
    def chat_template_role(self) -> str:
        """The role whose turn the saved chat template's generation prompt opens (a base model's: the assistant's)."""
        return CHAT_TEMPLATE_ROLES.get(self.record.get("chat_template"), GPT)

    def template_for(self, given: str | None, flag: str = "--template") -> str:
        """The template to use: ``given`` if set (a warning when it contradicts the record), else the recorded one."""
        if given is None:
            return self.template
        if self.record_file is not None and given != self.template:
            _warn_once(f"warning: {flag} {given} contradicts {self.record_file} (trained with --template "
                       f"{self.template}); using {given}")
        return given


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_checkpoint(model: str | Path | None) -> Checkpoint:
    """What the checkpoint directory ``model`` records; the defaults for anything else (a hub name, a base model)."""
    path = Path(str(model)) / RUN_RECORD if model else None
    if path is None or not path.is_file():
        return Checkpoint(None, DEFAULT_TEMPLATE, None, None)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        template, role, system = record["template"], record["train_role"], record["system_prompt"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a readable run record ({type(err).__name__}: {err})") from None
    if template not in TEMPLATES or role not in (HUMAN, GPT) or not isinstance(system, str):
        raise UsageError(f"{path}: template {template!r}, train_role {role!r}: not a run record of this project")
    return Checkpoint(path, template, role, system, record)


def write_checkpoint_files(folder: str | Path, record: dict) -> None:
    """The run record and the model card rendered from it, written atomically into ``folder``."""
    folder = Path(folder)
    atomic_write(folder / RUN_RECORD, lambda f: json.dump(record, f, indent=2, default=str))
    atomic_write(folder / MODEL_CARD, lambda f: f.write(model_card(record, folder)))


# -- the model card --------------------------------------------------------------------------------

_ROLE_LINES = {
    HUMAN: ("a user simulator: it writes the **user's** next turn of a conversation (the loss was on the human "
            "turns)",
            "`messages` = the conversation so far: the human's turns as `user`, the assistant's as `assistant`, "
            "after an optional `system` message. The reply (returned as the OpenAI `assistant` message) is the "
            "next **user** turn. A request holding only a system message asks for a conversation's opening "
            "question; a request ending in a user message still opens a new user turn. transformers' "
            "`pipeline(\"text-generation\")` treats a conversation ending in an assistant message as a prefill; "
            "this template opens a user turn there too (pass `return_full_text=False` to get the turn alone)."),
    GPT: ("an assistant: it writes the **assistant's** next turn (the loss was on the assistant turns)",
          "`messages` = the conversation so far: the human's turns as `user`, the assistant's as `assistant`, "
          "after an optional `system` message. The reply is the next assistant turn."),
}


def _template_line(record: dict) -> str:
    role = CHAT_TEMPLATE_ROLES.get(record.get("chat_template"))
    opened = {HUMAN: "opens a user turn", GPT: "opens an assistant turn"}.get(role)
    if record["template"] == "dyadic":
        kind = "dyadic: `SYSTEM Human: <s>…</s>Assistant: <s>…</s>…` (the paper's)"
    else:
        kind = "chat: the base model's own chat template, as `apply_chat_template` renders it"
    saved = (f"the saved chat template renders it exactly and its generation prompt {opened}" if opened else
             "the saved chat template is the base model's own, unchanged: its generation prompt opens an "
             "assistant turn")
    return f"{kind}; {saved}"


def _serve_lines(record: dict, folder: Path) -> list[str]:
    if record.get("saved") == "adapter" or (record.get("lora") and record.get("saved") == "checkpoint"):
        return [f"This directory holds a LoRA adapter on `{record.get('base_model')}` (peft): merge it into the "
                f"base (`merge_and_unload`) before serving."]
    role = record["train_role"]
    lines = ["```bash"]
    if record.get("chat_template"):
        lines += [f"vllm serve {folder}    # or any server that renders the checkpoint's chat template",
                  f"python -m model.serve --model {folder} --render chat-template    # the same rendering, "
                  f"no GPU needed"]
    lines += [f"python -m model.serve --model {folder}    # the project's renderer: --role {role}, "
              f"--template {record['template']} from {RUN_RECORD}", "```"]
    return lines


def _training_lines(record: dict) -> list[str]:
    convs = record.get("conversations") or {}
    steps = record.get("steps")
    lines = [f"* base model: `{record.get('base_model')}`",
             f"* data: `{record.get('data_path')}` ({record.get('data_hash')}): {convs.get('train')} conversations "
             f"trained, {convs.get('eval')} held out, {convs.get('bad')} bad records skipped",
             f"* {'steps: ' + str(steps) if steps is not None else 'steps: not recorded'}"
             + (f" ({record['epochs']:.2f} epochs)" if isinstance(record.get("epochs"), (int, float)) else "")
             + f", {record.get('rows')} rows of up to {record.get('model_max_length')} tokens"
             + f" ({'packed' if record.get('packing') else 'one conversation per row'})"]
    if record.get("condition"):
        n = record.get("conditioned_conversations") or {}
        lines.append(f"* conditioned on intents (`--condition {record['condition']}`): {n.get('train')} of "
                     f"{convs.get('train')} training conversations carried an intent, rendered after the system "
                     f"prompt as `Intent: …` (and `Persona: …`, `model.dyadic.intent_system`); the others kept the "
                     f"plain prompt. A request conditions it by sending that text as its system message.")
    metrics = record.get("metrics") or {}
    if "eval_loss" in metrics:
        loss = float(metrics["eval_loss"])
        lines.append(f"* held-out loss {loss:.4f} (perplexity {math.exp(min(loss, 50)):.2f}) on "
                     f"{convs.get('eval')} conversations ({(record.get('eval_split') or {}).get('file')})")
    if "train_loss" in metrics:
        lines.append(f"* mean training loss {float(metrics['train_loss']):.4f}")
    return lines


def model_card(record: dict, folder: str | Path) -> str:
    """The checkpoint's README.md: role, template, default system prompt, how to serve it, requests, training."""
    role, folder = record["train_role"], Path(folder)
    name = MODEL_NAMES[role]
    what, request = _ROLE_LINES[role]
    notes = [f"* {note}" for note in record.get("chat_template_notes") or []]
    system = record["system_prompt"]
    return "\n".join([
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        f"tags: [platolm, {name.lower()}{', user-simulator' if role == HUMAN else ''}]", "---", "",
        f"# {name}", "",
        f"{name} is {what}. Trained with the PlatoLM reference implementation "
        f"([arXiv:2308.11534](https://arxiv.org/abs/2308.11534)); `{RUN_RECORD}` holds the whole run record.", "",
        f"* role: `{role}`", f"* template: {_template_line(record)}", *notes, "",
        "## Default system prompt", "",
        "A request without a system message gets the one it was trained with; a request's own system message "
        "(for example this prompt followed by an intent) is rendered exactly as training rendered a record's own "
        "system prompt, and an empty one means none.", "",
        "```text", system if system else "(none)", "```", "",
        "## Serve it", "", *_serve_lines(record, folder), "",
        "## What a request contains", "", request, "",
        "## Training", "", *_training_lines(record), "",
    ])
