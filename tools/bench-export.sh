#!/usr/bin/env bash
# Export benchmark: a base-size random checkpoint (the exact facebook/wav2vec2-base-960h
# architecture, 95 M parameters) through `w2v export`, reporting wall time and peak memory.
# Targets (issue "Foundation"): under 10 s and peak RSS under 2x the weights' size.
#
# Usage: tools/bench-export.sh [WORK_DIR]   (needs torch + transformers for the first run:
#        PYTHON=/path/to/python with them; the checkpoint is reused afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/bench-export}"
python="${PYTHON:-python3}"
ckpt="$work/base-960h-random"
mkdir -p "$work"
if [[ ! -f "$ckpt/model.safetensors" ]]; then
  "$python" tools/fixtures/gen_wav2vec2.py --base-size "$ckpt"
fi
cargo build --release --quiet --bin w2v
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
weights=$(stat -c %s "$ckpt/model.safetensors")
log="$work/time.log"
/usr/bin/time -v target/release/w2v export "$ckpt" -o "$work/base.onnx" 2>"$log" >/dev/null
wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
rss_kb=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
awk -v w="$weights" -v r="$rss_kb" -v t="$wall" 'BEGIN {
  printf "export base-size (95M params): wall %s, peak RSS %.0f MB, weights %.0f MB, RSS/weights %.2fx\n",
    t, r / 1024, w / 1048576, (r * 1024) / w }'
