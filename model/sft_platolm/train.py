"""Train PlatoLM, the assistant: the shared trainer with the loss on the assistant turns.

Usage (from the repo root; see model/train.py and recipes/ for every option)::

    python -m model.sft_platolm.train --config recipes/tiny_cpu.yaml \\
        --model smollm2 --data socraticchat.json --out runs/platolm-tiny
    torchrun --nproc-per-node 4 -m model.sft_platolm.train --config recipes/platolm_7b_fsdp.yaml
"""
import sys

from model.sft_platolm import SYSTEM_PROMPT, TRAIN_ROLE
from model.train import main

if __name__ == "__main__":
    sys.exit(main(TRAIN_ROLE, SYSTEM_PROMPT))
