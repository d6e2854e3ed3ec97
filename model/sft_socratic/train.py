"""Train Socratic, the user simulator: the shared trainer with the loss on the human turns.

Usage (from the repo root; see model/train.py and recipes/ for every option)::

    python -m model.sft_socratic.train --config recipes/tiny_cpu.yaml \\
        --model smollm2 --data convs.json --out runs/socratic-tiny
    torchrun --nproc-per-node 4 -m model.sft_socratic.train --config recipes/socratic_7b_fsdp.yaml
"""
import sys

from model.sft_socratic import SYSTEM_PROMPT, TRAIN_ROLE
from model.train import main

if __name__ == "__main__":
    sys.exit(main(TRAIN_ROLE, SYSTEM_PROMPT))
