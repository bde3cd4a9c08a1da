#!/usr/bin/env python3
"""The shipping check on `samples/`: every sample must come out as its transcript, and the
README's quick-start sample repeated ten times in one file (about 32 s, two 30 s windows, as the
Python package's threading test reads it) must come out as ten correct repetitions.

  check_samples.py models/default.onnx models/default.int8.onnx --backends tract ort

Runs `w2v transcribe` on each model with each backend given (`--backends tract ort`) and prints
one line per model, backend and file. Exit status 1 when any transcript is wrong. Dev WER decides
between candidate models; this check only vetoes one (run 7 and the mean of runs 7-9 read the
sample of the time, nine-zero-five-one.wav, as "NINE ZRO FIVE ONE").
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
TILED_SAMPLE = "zero-zero-six-seven.wav"
REPEATS = 10


def transcribe(w2v: str, model: Path, backend: str, files: list[Path]) -> dict[str, str]:
    out = subprocess.run([w2v, "transcribe", "--model", str(model), "--backend", backend,
                          "--format", "json", *map(str, files)],
                         check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {Path(j["file"]).name: j["text"].strip().lower() for j in lines}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--w2v", default=str(REPO / "target" / "release" / "w2v"))
    ap.add_argument("--backends", nargs="+", default=["tract"])
    ap.add_argument("--samples", type=Path, default=REPO / "samples")
    args = ap.parse_args()

    rows = [line.split("\t") for line in (args.samples / "samples.tsv").read_text().splitlines()[1:]]
    expected = {path: text.strip().lower() for path, text in rows}
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        audio, sr = sf.read(args.samples / TILED_SAMPLE, dtype="float32")
        tiled = Path(tmp) / f"{Path(TILED_SAMPLE).stem}-x{REPEATS}.wav"
        sf.write(tiled, np.tile(audio, (REPEATS,) + (1,) * (audio.ndim - 1)), sr, subtype="PCM_16")
        files = [args.samples / p for p in expected] + [tiled]
        for model in args.models:
            for backend in args.backends:
                got = transcribe(args.w2v, model, backend, files)
                for name, want in expected.items():
                    ok = got.get(name) == want
                    failed += not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {model.name} {backend} {name}: {got.get(name)!r}")
                words = got.get(tiled.name, "").split()
                n = len(expected[TILED_SAMPLE].split())
                reps = [" ".join(words[i:i + n]) for i in range(0, len(words), n)]
                right = sum(r == expected[TILED_SAMPLE] for r in reps)
                ok = right == REPEATS and len(reps) == REPEATS
                failed += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {model.name} {backend} {tiled.name}: "
                      f"{right}/{REPEATS} repetitions right" + ("" if ok else f": {got.get(tiled.name)!r}"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
