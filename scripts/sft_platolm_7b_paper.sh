#!/usr/bin/env bash
# Train PlatoLM exactly as the original did (recipes/platolm_7b_paper.yaml): Llama-2-7B on SocraticChat, one padded
# conversation per row, an added <pad> token, 5% held out (seed 125), eval and a checkpoint every 37 steps keeping 6;
# torchrun on 4 GPUs + FSDP.
# Usage, from the repo root (every variable has a default; extra flags override the recipe):
#   MODEL=meta-llama/Llama-2-7b-hf DATA=data/socraticchat.json OUT=runs/platolm-7b-paper bash scripts/sft_platolm_7b_paper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RECIPE=recipes/platolm_7b_paper.yaml OUT="${OUT:-runs/platolm-7b-paper}"
exec bash scripts/sft_platolm_7b.sh "$@"
