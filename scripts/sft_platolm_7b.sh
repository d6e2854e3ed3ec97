#!/usr/bin/env bash
# Train PlatoLM (the paper's recipe): Llama-2-7B on SocraticChat, loss on the assistant turns, torchrun on 4 GPUs + FSDP.
# Usage, from the repo root (every variable has a default; extra flags override the recipe):
#   MODEL=meta-llama/Llama-2-7b-hf DATA=data/socraticchat.json OUT=runs/platolm-7b bash scripts/sft_platolm_7b.sh [--flag value ...]
# RECIPE=recipes/platolm_7b_paper.yaml gives the original's padded batches (scripts/sft_platolm_7b_paper.sh).
# Rerunning the same command resumes from the last checkpoint in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${MODEL:-meta-llama/Llama-2-7b-hf}"
DATA="${DATA:-data/socraticchat.json}"
OUT="${OUT:-runs/platolm-7b}"
NPROC="${NPROC:-4}"
RECIPE="${RECIPE:-recipes/platolm_7b_fsdp.yaml}"
PORT="${MASTER_PORT:-29500}"
PYTHON="${PYTHON:-python}"
exec "$PYTHON" -m torch.distributed.run --nproc-per-node "$NPROC" --master-port "$PORT" \
    -m model.sft_platolm.train --config "$RECIPE" \
    --model "$MODEL" --data "$DATA" --out "$OUT" "$@"
