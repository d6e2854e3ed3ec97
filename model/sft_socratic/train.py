"""Train Socratic, the user simulator: the shared trainer with the loss on the human turns.

Usage (from the repo root; see model/train.py and recipes/ for every option)::

    python -m model.sft_socratic.train --config recipes/tiny_cpu.yaml \\
        --model_name_or_path smollm2 --data_path convs.json --output_dir runs/socratic-tiny
    torchrun --nproc_per_node 4 -m model.sft_socratic.train --config recipes/socratic_7b_fsdp.yaml
"""
import sys

from model.sft_socratic import SYSTEM_PROMPT, TRAIN_ROLE
from model.train import main

if __name__ == "__main__":
    sys.exit(main(TRAIN_ROLE, SYSTEM_PROMPT))
