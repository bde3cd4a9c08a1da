#!/usr/bin/env bash
# On-device adaptation of the shipped default model to one new speaker, with `w2v finetune`.
#
#   tools/train-default-model/adapt.sh [--speaker fsdd:lucas] [--train-clips 250] [--steps 150]
#                                      [--model models/default.onnx] [--out DIR] [-- finetune args]
#
# The speaker's clips come from manifest/dev.tsv. The default model never trained on dev speakers:
# dev only picked between the recipe's two runs. The clips are split by their FSDD index. Indices
# 0-24 of each digit (250 clips, about 2 minutes of audio) are for fine-tuning. Indices 25-49 are
# held back. The script runs `w2v finetune` with `--eval` on the held-back clips, which reports
# the WER before and after. Then it re-quantizes the result to int8 and evaluates that too.
# Results go to OUT/adapt.json; OUT defaults to tools/train-default-model/work/adapt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SPEAKER="fsdd:lucas" TRAIN_CLIPS=250 STEPS=150 MODEL="$REPO/models/default.onnx" OUT="$HERE/work/adapt"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --speaker) SPEAKER="$2"; shift 2 ;;
    --train-clips) TRAIN_CLIPS="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "adapt.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
W2V="${W2V:-$REPO/target/release/w2v}"
[[ -x "$W2V" ]] || { echo "adapt.sh: $W2V missing (cargo build --release, or set W2V)" >&2; exit 1; }
mkdir -p "$OUT"
# rows of the speaker, paths made absolute; FSDD names are digit_speaker_index.wav
python3 - "$HERE/manifest/dev.tsv" "$SPEAKER" "$TRAIN_CLIPS" "$OUT" <<'PY'
import sys, re
from pathlib import Path
tsv, speaker, n_train, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
rows = []
for line in tsv.read_text().splitlines()[1:]:
    c = line.split("\t")
    if c[2] == speaker:
        idx = int(re.search(r"_(\d+)\.wav$", c[0]).group(1)) if c[3] == "fsdd" else len(rows)
        rows.append((idx, str((tsv.parent / c[0]).resolve()), c[1]))
if not rows:
    sys.exit(f"adapt.sh: no rows of {speaker} in {tsv}")
per_word = max(1, n_train // len({r[2] for r in rows}))
train = [r for r in rows if r[0] < per_word]
test = [r for r in rows if r[0] >= per_word]
for name, part in (("train", train), ("test", test)):
    (out / f"{name}.tsv").write_text("path\ttranscript\n" + "".join(f"{p}\t{t}\n" for _, p, t in part))
print(f"adapt.sh: {speaker}: {len(train)} clips to fine-tune on, {len(test)} held back")
PY
"$W2V" finetune --model "$MODEL" --data "$OUT/train.tsv" --eval "$OUT/test.tsv" --eval-every 50 \
  --output "$OUT/run" --steps "$STEPS" --json "${EXTRA[@]}" | tee "$OUT/finetune.jsonl"
"$W2V" export "$OUT/run/model.onnx" -o "$OUT/run/model.int8.onnx" --precision int8 --eval "$OUT/test.tsv" \
  --json > "$OUT/requantize.json"
for m in "$MODEL" "$OUT/run/model.onnx" "$OUT/run/model.int8.onnx"; do
  "$W2V" eval --model "$m" --data "$OUT/test.tsv" --json > "$OUT/eval-$(basename "${m%.onnx}").json"
done
python3 - "$OUT" "$MODEL" <<'PY'
import json, sys
from pathlib import Path
out, base = Path(sys.argv[1]), Path(sys.argv[2])
lines = (out / "finetune.jsonl").read_text()
report = json.loads(lines[lines.index("{\n"):])
ev = {k: json.loads((out / f"eval-{k}.json").read_text()) for k in (base.stem, "model", "model.int8")}
res = dict(speaker_train=str(out / "train.tsv"), speaker_test=str(out / "test.tsv"), finetune=report,
           wer_before=ev[base.stem]["wer"], wer_after=ev["model"]["wer"], wer_after_int8=ev["model.int8"]["wer"])
(out / "adapt.json").write_text(json.dumps(res, indent=2) + "\n")
print(f"held-back WER: before {100 * res['wer_before']:.2f} %, after {100 * res['wer_after']:.2f} % "
      f"(int8 {100 * res['wer_after_int8']:.2f} %); {report['steps']} updates on {report['examples']} clips in "
      f"{report['wall_seconds']:.0f} s, peak memory {report['peak_memory_mb']:.0f} MB")
PY
