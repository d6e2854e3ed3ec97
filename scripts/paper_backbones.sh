#!/usr/bin/env bash
# Backbone pairing (the paper's ablation): Socratic and PlatoLM on different backbones with the same recipes.
# FSDP wraps whatever decoder layer each backbone declares (its _no_split_modules: LlamaDecoderLayer,
# MistralDecoderLayer, ...), so no recipe names a layer class. The commands only; each needs 4 GPUs.
# Usage, from the repo root:  SHAREGPT=data/sharegpt.json OUT=runs/backbones bash scripts/paper_backbones.sh
#   RECIPE_KIND=paper (default: the original's padded batches) or fsdp (packed rows); extra flags go to both trainers.
set -euo pipefail
cd "$(dirname "$0")/.."
SHAREGPT="${SHAREGPT:-data/sharegpt.json}"
OUT="${OUT:-runs/backbones}"
KIND="${RECIPE_KIND:-paper}"
SOCRATIC_BASE="${SOCRATIC_BASE:-huggyllama/llama-7b}"      # Socratic on LLaMA-1-7B
PLATOLM_BASE="${PLATOLM_BASE:-mistralai/Mistral-7B-v0.1}"   # PlatoLM on Mistral-7B

# 1. Socratic (the user simulator) on LLaMA-1-7B
RECIPE="recipes/socratic_7b_$KIND.yaml" MODEL="$SOCRATIC_BASE" DATA="$SHAREGPT" OUT="$OUT/socratic-llama1" \
    bash scripts/sft_socratic_7b.sh "$@"
# 2. SocraticChat from it (free mode; see README for the seeded modes and the teacher)
python -m data.simulate --simulator "$OUT/socratic-llama1" --engine vllm --teacher-model gpt-3.5-turbo \
    --mode free --num-sessions 50728 --concurrency 256 \
    --out "$OUT/socraticchat.jsonl"
# 3. PlatoLM (the assistant) on Mistral-7B
RECIPE="recipes/platolm_7b_$KIND.yaml" MODEL="$PLATOLM_BASE" DATA="$OUT/socraticchat.jsonl" OUT="$OUT/platolm-mistral" \
    bash scripts/sft_platolm_7b.sh "$@"
