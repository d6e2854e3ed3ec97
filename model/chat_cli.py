"""The chat loop shared by both CLIs: the model plays its package's role, the person the other.

``python -m model.sft_platolm.cli``: you are the human, the model (PlatoLM) answers.
``python -m model.sft_socratic.cli``: the model (Socratic) asks as the human, you answer.

Input: one line is one message. A line ending with a backslash continues on the next line; or
paste a block between two lines holding only three double quotes (\"\"\"). Commands: ``/reset``
(start over), ``/save FILE`` (the conversation as a ShareGPT JSON array), ``/exit``. With piped
stdin the same loop runs unattended and ends at end of input; the model's turns go to stdout,
notes and prompts to stderr.

Usage::

    python -m model.sft_platolm.cli --model smollm2
    printf 'Hi!\\n/save chat.json\\n' | python -m model.sft_socratic.cli --model smollm2
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from core.conversation import GPT, HUMAN, Conversation, Turn, write_json_array
from model.dyadic import ROLE_PREFIX, TEMPLATES
from core.options import add_flag
from core.runner import command

CONTINUE = "\\"
FENCE = '"""'
HELP = ("commands: /reset (start over), /save FILE (ShareGPT JSON), /exit; end a line with \\ to go on "
        'to the next line, or paste a block between two lines of """')


def line_reader(stream=None, interactive: bool | None = None) -> Callable[[str], str | None]:
    """read(prompt) -> one line without its newline, or None at end of input.

    Interactive terminals get ``input()`` (line editing, the prompt shown); piped input is read
    plainly, without prompts, so transcripts hold only the conversation.
    """
    stream = stream or sys.stdin
    interactive = stream.isatty() if interactive is None else interactive

    def read(prompt: str) -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        line = stream.readline()
        return line.rstrip("\r\n") if line else None

    return read


def read_message(read: Callable[[str], str | None], prompt: str) -> str | None:
    """One message, joining continued lines and \"\"\" blocks; None at end of input."""
    line = read(prompt)
    if line is None:
        return None
    if line.strip() == FENCE:
        block = []
        while (line := read("... ")) is not None and line.strip() != FENCE:
            block.append(line)
        return "\n".join(block)
    parts = []
    while line is not None and line.endswith(CONTINUE):
        parts.append(line[: -len(CONTINUE)])
        line = read("... ")
    parts.append(line or "")
    return "\n".join(parts)


class Chat:
    """The conversation state and the model's side of it."""

    def __init__(self, generator, model_role: str, system_prompt: str, args, out=None, err=None):
        self.gen, self.model_role, self.args = generator, model_role, args
        self.out, self.err = out or sys.stdout, err or sys.stderr  # the streams of now, not of the import
        self.system = system_prompt if args.system is None else args.system
        self.person_role = GPT if model_role == HUMAN else HUMAN
        self.turns: list[Turn] = []

    def note(self, text: str) -> None:
        print(f"[{text}]", file=self.err, flush=True)

    def model_speaks(self) -> bool:
        """Stream the model's next turn; False when the conversation no longer fits the context."""
        from model.generate import ContextOverflow

        label = ROLE_PREFIX[self.model_role]
        try:
            stream = self.gen.stream(self.turns, self.model_role, self.system,
                                     temperature=self.args.temperature, top_p=self.args.top_p,
                                     max_new_tokens=self.args.max_new_tokens, seed=self.args.seed)
        except ContextOverflow as err:
            dropped = self.turns and self.turns[-1].role == self.person_role
            if dropped:
                self.turns.pop()
            self.note(f"the conversation no longer fits the context ({err.prompt_tokens} tokens, "
                      f"limit {err.limit})" + ("; your last message was not added" if dropped else "")
                      + ": /save FILE to keep it, /reset to start over")
            return False
        print(label, end="", file=self.out, flush=True)
        pieces = []
        try:
            for piece in stream:
                pieces.append(piece)
                print(piece, end="", file=self.out, flush=True)
        except KeyboardInterrupt:
            stream.close()
            self.note("interrupted")
        print(file=self.out, flush=True)
        done = stream.completion
        text = done.text if done else "".join(pieces)
        if done and done.finish_reason == "length":
            full = done.prompt_tokens + done.completion_tokens >= self.gen.max_context
            self.note("cut off: the context is full; /save FILE, then /reset" if full
                      else f"cut off at --max-new-tokens {self.args.max_new_tokens}")
        self.turns.append(Turn(self.model_role, text))
        return True

    def command(self, line: str) -> bool | None:
        """Run a /command; True to go on, False to exit, None if the line is not a command."""
        name, _, rest = line.strip().partition(" ")
        if name == "/exit":
            return False
        if name == "/reset":
            self.turns = []
            self.note("new conversation")
            return True
        if name == "/save":
            if not rest.strip():
                self.note("usage: /save FILE")
                return True
            path = rest.strip()
            # the system prompt is saved only when overridden: the default follows from the role
            conv = Conversation(f"chat-{int(time.time())}", list(self.turns), self.args.system)
            try:
                write_json_array(path, [conv.to_sharegpt()])
                self.note(f"saved {len(self.turns)} turns to {path}")
            except OSError as err:
                self.note(f"could not save: {err}")
            return True
        if name == "/help":
            self.note(HELP)
            return True
        return None

    def run(self, read: Callable[[str], str | None]) -> None:
        blocked = False  # the model could not speak; wait for the person before trying again
        while True:
            last = self.turns[-1].role if self.turns else None
            model_next = (last == HUMAN) if self.model_role == GPT else (last in (None, GPT))
            if model_next and not blocked:
                blocked = not self.model_speaks()
                continue
            message = read_message(read, ROLE_PREFIX[self.person_role])
            if message is None:
                return
            handled = self.command(message) if message.startswith("/") else None
            if handled is False:
                return
            if handled:
                blocked = False
                continue
            if message.strip():
                self.turns.append(Turn(self.person_role, message))
                blocked = False


@command
def main(model_role: str, system_prompt: str, prog: str, argv: list[str] | None = None) -> int:
    who = "the assistant (PlatoLM)" if model_role == GPT else "the human (Socratic user simulator)"
    p = argparse.ArgumentParser(prog=prog, description=f"Chat with a model that plays {who}. {HELP}.")
    add_flag(p, "--model", "--model-path", required=True, help="checkpoint dir, hub name, or 'smollm2'")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default: 0.7)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-context", type=int, default=None,
                   help="context limit in tokens (default: the model's)")
    p.add_argument("--template", choices=TEMPLATES,
                   help="prompt template (default: the checkpoint's, from its platolm_run.json, else dyadic)")
    p.add_argument("--system", default=None,
                   help=f"system prompt override (default: the checkpoint's trained one, else the paper's, "
                        f"{system_prompt[:40]!r}...)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, for repeatable chats")
    args = p.parse_args(argv)
    from model.generate import Generator

    gen = Generator(args.model, args.template, args.device, max_context=args.max_context)
    read = line_reader()
    if sys.stdin.isatty():
        print(f"[{who} is ready; {HELP}]", file=sys.stderr)
    try:
        Chat(gen, model_role, gen.system_for(model_role), args).run(read)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 0
