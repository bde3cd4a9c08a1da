#!/usr/bin/env bash
# The default-model recipe, end to end, in one command (see README.md):
#
#   tools/train-default-model/run.sh [--budget-minutes 110] [--threads 2] [--seed 1234]
#   tools/train-default-model/run.sh --smoke        # whole pipeline on a tiny subset, < 5 min
#
# Stages (each resumable; a stage with WORK/<stage>/done.json is skipped on a re-run):
#   1 prepare_data.py  manifest/ (speaker-disjoint train/dev/test TSVs, sha256 of every file)
#   2 synth.py         espeak-ng speech + phrases concatenated from real clips -> WORK/synth/
#   3 pretrain.py      wav2vec 2.0 self-supervised pre-training          (--split share 1)
#   4 finetune.py      --init pretrained: CTC fine-tuning, frozen CNN     (--split share 2)
#   5 finetune.py      --init scratch: same architecture, labels only     (--split share 3)
#   6 finalize.py      pick by dev WER, check + reload the HF checkpoint, results, model card
#   7 export.sh        w2v export -> models/default.onnx (smoke: WORK/final/default.onnx),
#                      int8 step (skipped while w2v rejects it), w2v eval on the test sets
#
# Options:
#   --budget-minutes N   total wall clock (default 110; smoke 4). Training gets N minus
#                        --reserve-minutes (data, synthesis, evaluation, export; default 12,
#                        smoke 2.5), split between the stages by --split (default 8,12,80).
#   --threads N          torch threads (default 2; smoke 1, leaving a core to others)
#   --seed N             seed of everything (default 1234)
#   --work DIR           stage outputs (default tools/train-default-model/work/full or work/smoke)
#   --data DIR           shared data folder (default ../shared/data from the repository root)
#   --out FILE           ONNX output (default models/default.onnx; smoke WORK/final/default.onnx)
#   --fresh              delete WORK first (otherwise finished stages are reused, others resumed)
#   --no-export          stop after finalize.py (no cargo)
#   --bf16 / --no-bf16   CTC stages under torch.autocast(bfloat16), or not. Default: on where the
#                        CPU has AVX512_BF16 or AMX (about 1.5x the updates), off elsewhere (no
#                        bf16 kernels: slower); see README.md
# Environment: PYTHON (default python3) must have torch, transformers, numpy, scipy, soundfile,
# safetensors; espeak-ng must be on PATH (apt-get install -y espeak-ng).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"
BUDGET="" THREADS="" SEED=1234 WORK="" DATA="" OUT="" RESERVE="" SPLIT="8,12,80"
SMOKE=0 FRESH=0 EXPORT=1 BF16=auto
while [[ $# -gt 0 ]]; do
  case "$1" in
    --budget-minutes) BUDGET="$2"; shift 2 ;;
    --reserve-minutes) RESERVE="$2"; shift 2 ;;
    --split) SPLIT="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --fresh) FRESH=1; shift ;;
    --no-export) EXPORT=0; shift ;;
    --bf16) BF16=on; shift ;;
    --no-bf16) BF16=off; shift ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# //; s/^#$//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $SMOKE == 1 ]]; then
  BUDGET="${BUDGET:-4}" RESERVE="${RESERVE:-2.5}" THREADS="${THREADS:-1}" WORK="${WORK:-$HERE/work/smoke}"
  OUT="${OUT:-$WORK/final/default.onnx}"
  SMOKE_FLAG=(--smoke)
else
  BUDGET="${BUDGET:-110}" RESERVE="${RESERVE:-12}" THREADS="${THREADS:-2}" WORK="${WORK:-$HERE/work/full}"
  OUT="${OUT:-$REPO/models/default.onnx}"
  SMOKE_FLAG=()
fi
DATA="${DATA:-$REPO/../shared/data}"
if [[ $BF16 == auto ]]; then
  grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && BF16=on || BF16=off
fi
BF16_FLAG=(); [[ $BF16 == on ]] && BF16_FLAG=(--bf16)

"$PY" -c "import torch, transformers, numpy, scipy, soundfile, safetensors" 2>/dev/null || {
  echo "run.sh: $PY lacks torch/transformers/numpy/scipy/soundfile/safetensors (set PYTHON=...)" >&2; exit 1; }
command -v espeak-ng >/dev/null || { echo "run.sh: espeak-ng not found (apt-get install -y espeak-ng)" >&2; exit 1; }
[[ -f "$DATA/transcripts.tsv" ]] || { echo "run.sh: $DATA/transcripts.tsv not found (--data)" >&2; exit 1; }

[[ $FRESH == 1 ]] && rm -rf "$WORK"
mkdir -p "$WORK/logs"
WORK="$(cd "$WORK" && pwd)"
LOG="$WORK/logs/run-$(date +%Y%m%d-%H%M%S).log"
exec > >(tee -a "$LOG") 2>&1
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" OMP_WAIT_POLICY=PASSIVE PYTHONHASHSEED=0 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

read -r PRE_MIN FT_MIN SCR_MIN < <("$PY" -c "
b, r = float('$BUDGET'), float('$RESERVE'); s = [float(x) for x in '$SPLIT'.split(',')]
t = max(b - r, 0.3)
print(' '.join(f'{t * x / sum(s):.2f}' for x in s))")
T0=$(date +%s)
echo "run.sh: budget $BUDGET min (training $PRE_MIN + $FT_MIN + $SCR_MIN min), $THREADS threads, seed $SEED, bf16 $BF16, work $WORK"
echo "run.sh: log $LOG"
printf 'stage\tseconds\n' > "$WORK/timings.tsv"
stage() {
  local name="$1"; shift
  local t=$(date +%s)
  echo; echo "===== $name ($(( (t - T0) / 60 )) min elapsed)"
  "$@"
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t ))" >> "$WORK/timings.tsv"
}

stage prepare "$PY" "$HERE/prepare_data.py" --data "$DATA" --work "$WORK" --seed "$SEED" "${SMOKE_FLAG[@]}"
stage synth "$PY" "$HERE/synth.py" --work "$WORK" --seed "$SEED" --jobs "$THREADS" "${SMOKE_FLAG[@]}"
stage pretrain "$PY" "$HERE/pretrain.py" --work "$WORK" --seed "$SEED" --threads "$THREADS" \
  --minutes "$PRE_MIN" "${SMOKE_FLAG[@]}" $([[ $SMOKE == 1 ]] && echo --check-objective)
stage finetune "$PY" "$HERE/finetune.py" --init pretrained --work "$WORK" --seed "$SEED" \
  --threads "$THREADS" --minutes "$FT_MIN" "${SMOKE_FLAG[@]}" "${BF16_FLAG[@]}"
stage scratch "$PY" "$HERE/finetune.py" --init scratch --work "$WORK" --seed "$SEED" \
  --threads "$THREADS" --minutes "$SCR_MIN" "${SMOKE_FLAG[@]}" "${BF16_FLAG[@]}"
CMD="tools/train-default-model/run.sh --budget-minutes $BUDGET --threads $THREADS --seed $SEED"
[[ $SPLIT != "8,12,80" ]] && CMD="$CMD --split $SPLIT"
[[ $BF16 == on ]] && CMD="$CMD --bf16"
[[ $SMOKE == 1 ]] && CMD="tools/train-default-model/run.sh --smoke"
stage finalize "$PY" "$HERE/finalize.py" --work "$WORK" --command "$CMD" "${SMOKE_FLAG[@]}"

if [[ $EXPORT == 1 ]]; then
  if [[ $SMOKE == 1 ]]; then TEST_TSV="$WORK/manifest/test.tsv"; else TEST_TSV="$HERE/manifest/test.tsv"; fi
  stage export env PYTHON="$PY" bash "$HERE/export.sh" "$WORK/final/hf" "$OUT" "$WORK/final" \
    "$TEST_TSV" "$WORK/synth/phrases/test.tsv"
fi

echo
echo "===== done in $(( ($(date +%s) - T0) / 60 )) min $(( ($(date +%s) - T0) % 60 )) s (budget $BUDGET min)"
column -t "$WORK/timings.tsv" 2>/dev/null || cat "$WORK/timings.tsv"
echo "Hugging Face checkpoint: $WORK/final/hf"
[[ $EXPORT == 1 ]] && echo "ONNX: $OUT"
echo "results: $WORK/final/results.json; model card: $WORK/final/model-card.md (-> models/README.md)"
