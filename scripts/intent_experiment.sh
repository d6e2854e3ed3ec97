#!/usr/bin/env bash
# Does conditioning on intents help Socratic? SmolLM2 Socratic trained with and without --condition intent on the
# same data and steps (40 steps, lr 1e-4, all weights, 384 tokens, --template chat),
# intents written by SmolLM2 served here; then, for both, the held-out human-turn NLL given intents and the
# intent adherence of their sessions (against the same local teacher), next to the untrained model and the people.
# CPU, offline; every step is skipped once its output exists, so a rerun continues. On a shared machine: nice.
# Usage, from the repo root:  OUT=runs/intents nice -n 10 bash scripts/intent_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/intents}" PY="${PYTHON:-.venv/bin/python}" PORT="${PORT:-8931}"
TRAIN="${TRAIN:-200}" HELDOUT="${HELDOUT:-48}" CHARS="${CHARS:-1500}"
RES="$OUT/results/simulator" TEACHER="http://127.0.0.1:$PORT/v1"
mkdir -p "$RES"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

step() {  # step OUTPUT COMMAND...: run the command (printed) unless OUTPUT exists
  local done="$1"; shift
  if [ -e "$done" ]; then echo "# done: $done"; return; fi
  echo "+ $*"; "$@"
}

# 1. ShareGPT: TRAIN conversations, then HELDOUT after them (short ones: the local model reads each whole)
for part in train heldout; do
  skip=$([ "$part" = train ] && echo 0 || echo "$TRAIN") n=$([ "$part" = train ] && echo "$TRAIN" || echo "$HELDOUT")
  step "$OUT/${part}_raw.json" $PY -m scripts.take_sharegpt --skip "$skip" --n "$n" --max-chars "$CHARS" \
      --out "$OUT/${part}_raw.json"
  step "$OUT/${part}_clean.json" $PY -m data.prepare clean --data "$OUT/${part}_raw.json" --out "$OUT/${part}_clean.json"
done

# 2. intents, written by SmolLM2 (the demo's local teacher), then split to the training length (segments keep them)
$PY -m model.serve --model smollm2 --role gpt --template chat --port "$PORT" > "$OUT/teacher.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do
  kill -0 $SERVER 2>/dev/null || { echo "the teacher did not start: $OUT/teacher.log"; exit 1; }; sleep 2
done
for part in train heldout; do
  step "$OUT/${part}_intents.json" $PY -m data.prepare intents --data "$OUT/${part}_clean.json" \
      --out "$OUT/${part}_intents.json" --base-url "$TEACHER" --model teacher --max-new-tokens 64 \
      --report "$OUT/${part}_intents.report.json"
  step "$OUT/${part}_split.json" $PY -m data.prepare split --data "$OUT/${part}_intents.json" \
      --out "$OUT/${part}_split.json" --tokenizer smollm2 --template chat --max-length 384
done

# 3. two Socratics, the same data and steps; one sees each record's intent in its system prompt
for run in plain intent; do
  step "$OUT/socratic-$run/platolm_run.json" $PY -m model.sft_socratic.train --model smollm2 \
      --data "$OUT/train_split.json" --out "$OUT/socratic-$run" --template chat --max-length 384 \
      --max-steps 40 --per-device-train-batch-size 2 --learning-rate 1e-4 --warmup-steps 0.1 --logging-steps 1 \
      --save-steps 20 --use-cpu --report-to none $([ "$run" = intent ] && echo --condition intent)
done

# 4. held-out human-turn NLL given the intent, and over the same tokens without it
for model in smollm2 "$OUT/socratic-plain" "$OUT/socratic-intent"; do
  name=$(basename "$model")
  step "$RES/$name-ppl.json" $PY -m eval.simulator perplexity --model "$model" --data "$OUT/heldout_split.json" \
      --template chat --max-length 384 --condition intent --name "$name" --out "$RES/$name-ppl.json"
done

# 5. intent adherence: one 2-round session per held-out intent, matched against 10 candidates; the people's own
step "$RES/humans-adherence.json" $PY -m eval.simulator intent-adherence --data "$OUT/heldout_intents.json" \
    --name "ShareGPT humans" --out "$RES/humans-adherence.json"
step "$RES/humans-leakage.json" $PY -m eval.simulator goal-leakage --data "$OUT/heldout_intents.json" \
    --name "ShareGPT humans" --out "$RES/humans-leakage.json"
for model in smollm2 "$OUT/socratic-plain" "$OUT/socratic-intent"; do
  name=$(basename "$model")
  step "$RES/$name-adherence.json" $PY -m eval.simulator intent-adherence --model "$model" --template chat \
      --intents "$OUT/heldout_intents.json" --max-turns 2 --max-new-tokens 64 --max-context 384 \
      --teacher-base-url "$TEACHER" --teacher-model teacher --teacher-max-tokens 64 --keep-truncated-answers \
      --concurrency 16 --save "$OUT/sessions-$name.jsonl" --name "$name" --out "$RES/$name-adherence.json"
  step "$RES/$name-leakage.json" $PY -m eval.simulator goal-leakage --data "$OUT/sessions-$name.jsonl" \
      --name "$name" --out "$RES/$name-leakage.json"
done
$PY -m eval.tables --results "$OUT/results" --out "$OUT/REPORT.md"
echo "report: $OUT/REPORT.md"
