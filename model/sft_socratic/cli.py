"""Talk to Socratic, the user simulator: the model asks as the human, you answer as the assistant.

Usage::

    python -m model.sft_socratic.cli --model smollm2 [--device auto|cpu|cuda] [--temperature 0.7]
        [--top-p 1.0] [--max-new-tokens 512] [--template dyadic|chat] [--system TEXT]

Commands: /reset, /save FILE (ShareGPT JSON), /exit. End a line with \\ to continue it, or paste a
block between two lines of \"\"\". Works with piped stdin (see model/chat_cli.py).
"""
import sys

from model.chat_cli import main
from model.sft_socratic import SYSTEM_PROMPT, TRAIN_ROLE

if __name__ == "__main__":
    sys.exit(main(TRAIN_ROLE, SYSTEM_PROMPT, "python -m model.sft_socratic.cli"))
