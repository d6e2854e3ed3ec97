#!/usr/bin/env bash
# Train Socratic exactly as the original did (recipes/socratic_7b_paper.yaml): LLaMA-1-7B on ShareGPT, one padded
# conversation per row, an added <pad> token, every segment trained, a checkpoint each epoch; torchrun on 4 GPUs + FSDP.
# Usage, from the repo root (every variable has a default; extra flags override the recipe):
#   MODEL=huggyllama/llama-7b DATA=data/sharegpt.json OUT=runs/socratic-7b-paper bash scripts/sft_socratic_7b_paper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RECIPE=recipes/socratic_7b_paper.yaml OUT="${OUT:-runs/socratic-7b-paper}"
exec bash scripts/sft_socratic_7b.sh "$@"
