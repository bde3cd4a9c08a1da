#!/usr/bin/env python3
"""30 s of real speech logits for the beam-search benchmark (engine/benches/decode.rs).

Concatenates held-back test clips of the default model's split (FSDD and Speech Commands test
speakers, tools/train-default-model/manifest/test.tsv) in a seeded order with 0.25 s of silence
between them, up to exactly 30 s at 16 kHz, and saves the shipped model's logits of that audio
(`w2v transcribe --dump-logits`, tract) as engine/benches/data/real-30s.npy ([1500, 32]
float32). The benchmark decodes them as they are and softened (times 0.5 and 0.3: flatter
distributions, where the beam has more to do).

    python3 tools/lm/gen_bench_logits.py   # needs numpy, scipy, soundfile and a built w2v
"""
import csv
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[2]
SR = 16000
manifest = ROOT / "tools/train-default-model/manifest/test.tsv"
rows = list(csv.reader(open(manifest), delimiter="\t"))[1:]
rng = np.random.default_rng(22)
parts, total = [], 0
for i in rng.permutation(len(rows)):
    x, sr = sf.read(manifest.parent / rows[i][0], dtype="float32")
    if sr != SR:
        x = resample_poly(x, SR, sr).astype(np.float32)
    gap = np.zeros(SR // 4, np.float32)
    if total + len(x) + len(gap) > 30 * SR:
        break
    parts += [x, gap]
    total += len(x) + len(gap)
audio = np.concatenate(parts + [np.zeros(30 * SR - total, np.float32)])
with tempfile.TemporaryDirectory() as d:
    wav = Path(d) / "real-30s.wav"
    sf.write(wav, audio, SR, subtype="PCM_16")
    w2v = shutil.which("w2v") or str(ROOT / "target/release/w2v")
    subprocess.run([w2v, "transcribe", str(wav), "--dump-logits", d], check=True)
    out = ROOT / "engine/benches/data/real-30s.npy"
    logits = np.load(next(Path(d).glob("real-30s*.npy")))
    np.save(out, logits.reshape(-1, logits.shape[-1]).astype(np.float32))
    print(out, logits.shape)
