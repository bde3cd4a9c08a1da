#!/usr/bin/env bash
# Export a Hugging Face Wav2Vec2ForCTC folder to ONNX with the w2v binary, then evaluate it.
#
#   tools/train-default-model/export.sh HF_DIR OUT.onnx [REPORT_DIR] [EVAL.tsv ...]
#
# 1. fp32:  cargo run --release -- export HF_DIR -o OUT.onnx --fp16-weights
#           (float32 compute, weights stored as float16: half the file, for the models/ budget)
# 2. int8:  cargo run --release -- export HF_DIR -o OUT.int8.onnx --precision int8
#           (per-channel int8 Transformer and projection weights; w2v prints its accuracy report)
# 3. eval:  cargo run --release -- eval --model OUT.onnx --data EVAL.tsv --json  (each EVAL.tsv),
#           reports in REPORT_DIR/onnx-eval-<name>.json
set -euo pipefail
if [[ $# -lt 2 ]]; then sed -n '2,11p' "$0"; exit 2; fi
HF="$(cd "$1" && pwd)"
OUT="$2"
REPORT="${3:-$(dirname "$OUT")}"
shift 2; [[ $# -gt 0 ]] && shift
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$(dirname "$OUT")" "$REPORT"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
cd "$REPO"
W2V=(cargo run --release --quiet --)

echo "== export fp32: $HF -> $OUT"
"${W2V[@]}" export "$HF" -o "$OUT" --fp16-weights
"${W2V[@]}" inspect "$OUT" > "$REPORT/onnx-inspect.txt"

INT8="${OUT%.onnx}.int8.onnx"
echo "== export int8: $INT8"
"${W2V[@]}" export "$HF" -o "$INT8" --precision int8
MODELS=("$OUT" "$INT8")

for tsv in "$@"; do
  for model in "${MODELS[@]}"; do
    name="$(basename "${model%.onnx}")-$(basename "${tsv%.tsv}")"
    [[ "$tsv" == */phrases/* ]] && name="$name-phrases"
    echo "== w2v eval --model $(basename "$model") --data $tsv"
    "${W2V[@]}" eval --model "$model" --data "$tsv" --json > "$REPORT/onnx-eval-$name.json"
    "${PYTHON:-python3}" - "$REPORT/onnx-eval-$name.json" <<'PY' || cat "$REPORT/onnx-eval-$name.json"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   WER {100 * r['wer']:.2f} %  CER {100 * r['cer']:.2f} %  {r['utterances']} utterances, "
      f"{r['failed']} failed, real-time factor {r['real_time_factor']:.4f}")
PY
  done
done
