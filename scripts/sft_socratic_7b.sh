#!/usr/bin/env bash
# Train Socratic (the paper's recipe): LLaMA-1-7B on ShareGPT, loss on the human turns, torchrun on 4 GPUs + FSDP.
# Usage, from the repo root (every variable has a default; extra flags override the recipe):
#   MODEL=huggyllama/llama-7b DATA=data/sharegpt.json OUT=runs/socratic-7b bash scripts/sft_socratic_7b.sh [--flag value ...]
# RECIPE=recipes/socratic_7b_paper.yaml gives the original's padded batches (scripts/sft_socratic_7b_paper.sh).
# Rerunning the same command resumes from the last checkpoint in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-huggyllama/llama-7b}"
DATA="${DATA:-data/sharegpt.json}"
OUT="${OUT:-runs/socratic-7b}"
NPROC="${NPROC:-4}"
RECIPE="${RECIPE:-recipes/socratic_7b_fsdp.yaml}"
PORT="${MASTER_PORT:-29500}"
PYTHON="${PYTHON:-python}"
exec "$PYTHON" -m torch.distributed.run --nproc-per-node "$NPROC" --master-port "$PORT" \
    -m model.sft_socratic.train --config "$RECIPE" \
    --model "$MODEL" --data "$DATA" --out "$OUT" "$@"
