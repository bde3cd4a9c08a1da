#!/usr/bin/env bash
# Side-by-side CPU benchmark: w2v (ONNX Runtime, tract; fp32, fp16, int8) against PyTorch eager
# and Python onnxruntime (torch.onnx export, and its quantize_dynamic int8) on a base-size random
# wav2vec2, with the same thread count, for 1, 10 and 30 s of audio. Prints the table and target
# checks and replaces the marked section of docs/benchmarks.md. See tools/bench_compare.py.
#
# Usage: tools/bench-compare.sh [--tiny] [--threads 2] [--seconds 1,10,30] [--runs 5] [--no-docs]
#   --tiny: the 27 k-parameter test fixture (checks the script end to end; writes no docs)
# Needs torch, transformers, onnxruntime (PYTHON, default /opt/fixenv/bin/python) and ONNX
# Runtime's library for w2v (tools/fetch-ort.sh). W2V=path uses that binary instead of building
# target/release/w2v.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-/opt/fixenv/bin/python}"
if [[ -z "${W2V:-}" ]]; then
  cargo build --release --quiet --bin w2v
  W2V=target/release/w2v
fi
exec "$python" tools/bench_compare.py --w2v "$W2V" "$@"
