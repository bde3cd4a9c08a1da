#!/usr/bin/env python3
"""`w2v decode --pyctcdecode` beside pyctcdecode on real speech: the same logits, LM and settings.

The model's logits of held-back utterances (`w2v transcribe --dump-logits`, once) are decoded at
several softening scales (logits times SCALE: 1 is the model as it is, smaller values flatten the
distributions so that the beam and the LM decide more). For each scale: how often the top
transcripts are identical (with a 95 % Wilson interval), the seconds `w2v decode` takes as a whole
process (start, LM load, all decodes) and the seconds pyctcdecode's `decode` calls alone take.

The <s>, </s> and <unk> columns are set 30 below the frame's minimum in both: a CTC model never
emits them, w2v skips them, and pyctcdecode would spell them as text.

    python3 -m venv /tmp/lmvenv && /tmp/lmvenv/bin/pip install pyctcdecode==0.5.0 kenlm numpy
    NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL" \\
      /tmp/lmvenv/bin/python tools/lm/parity_real.py --w2v target/release/w2v \\
      --data tools/train-default-model/manifest/test.tsv --lm models/default.lm.arpa

(The numpy setting: see gen_pyctcdecode_expected.py; without it, numpy's AVX-512 exp/log move
some exact ties between beams by one bit on CPUs that have AVX-512.)
"""

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def onnx_metadata(path):
    """metadata_props of an ONNX ModelProto (field 14: key 1, value 2), without the onnx package."""
    buf = Path(path).read_bytes()

    def varint(b, i):
        v = shift = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                val, i = varint(b, i)
            elif wire == 2:
                n, i = varint(b, i)
                val, i = b[i:i + n], i + n
            elif wire == 1:
                val, i = b[i:i + 8], i + 8
            elif wire == 5:
                val, i = b[i:i + 4], i + 4
            else:
                raise ValueError(f"{path}: unexpected protobuf wire type {wire}")
            yield num, val

    meta = {}
    for num, val in fields(buf):
        if num == 14:
            kv = dict(fields(val))
            meta[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
    return meta


def read_tsv(path):
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        f = line.split("\t")
        if not line.strip() or (i == 0 and f[0] == "path"):
            continue
        p = Path(f[0])
        rows.append(p if p.is_absolute() else Path(path).parent / p)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--w2v", default="target/release/w2v")
    ap.add_argument("--model", default="models/default.onnx")
    ap.add_argument("--data", action="append", required=True, help="TSV of audio (path first)")
    ap.add_argument("--lm", default="models/default.lm.arpa")
    ap.add_argument("--scales", default="1.0,0.5,0.3")
    ap.add_argument("--work", type=Path, default=None, help="logits cache (default: a temp folder)")
    ap.add_argument("--show", type=int, default=5, help="print this many differing transcripts")
    args = ap.parse_args()
    from pyctcdecode import build_ctcdecoder

    work = args.work or Path(tempfile.mkdtemp())
    raw = work / "raw"
    files = [f for tsv in args.data for f in read_tsv(tsv)]
    names = [f"{i:05d}_{f.name}" for i, f in enumerate(files)]
    if not all((raw / (n + ".npy")).exists() for n in names):
        # Distinct names (clips of different folders share file names): link them first.
        links = work / "audio"
        links.mkdir(parents=True, exist_ok=True)
        for f, n in zip(files, names):
            link = links / n
            if not link.exists():
                os.symlink(f.resolve(), link)
        run = subprocess.run([args.w2v, "transcribe", "--model", args.model, "--dump-logits", str(raw),
                              *[str(links / n) for n in names]], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if run.returncode != 0:
            raise SystemExit(f"w2v transcribe failed: {run.stderr.strip()[-2000:]}")
    v = json.loads(onnx_metadata(args.model)["w2v.vocab"])
    vocab = [t for t, _ in sorted(v.items(), key=lambda kv: kv[1])] if isinstance(v, dict) else v
    blank = vocab.index("<pad>")
    labels = ["" if t == "<pad>" else " " if t == "|" else t.lower() for t in vocab]
    specials = [i for i, t in enumerate(vocab) if t in ("<s>", "</s>", "<unk>")]
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(args.lm), alpha=0.5, beta=1.5)
    print(f"{len(files)} utterances, LM {args.lm}, blank {blank}, specials {specials}")
    print(f"{'scale':>5} {'same':>10} {'share':>7} {'95 % interval':>17} {'w2v process s':>14} "
          f"{'pyctcdecode s':>14} {'ratio':>7}")
    for scale in [float(s) for s in args.scales.split(",")]:
        d = work / f"scale-{scale}"
        d.mkdir(exist_ok=True)
        arrays = []
        for n in names:
            x = np.load(raw / (n + ".npy")).astype(np.float32)
            x = x.reshape(-1, x.shape[-1]) * np.float32(scale)
            x[:, specials] = x.min(axis=1, keepdims=True) - 30.0
            np.save(d / (n + ".npy"), x)
            arrays.append(x.astype(np.float64))
        cmd = [args.w2v, "decode", "--pyctcdecode", "--vocab", args.model, "--lm", str(args.lm), "--json"]
        for n in names:
            cmd += ["--logits", str(d / (n + ".npy"))]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        w2v_s = time.perf_counter() - t0
        ours = [json.loads(line)["text"].lower() for line in out.splitlines() if line.strip()]
        t0 = time.perf_counter()
        theirs = [decoder.decode(x) for x in arrays]
        py_s = time.perf_counter() - t0
        same = sum(a == b for a, b in zip(ours, theirs))
        lo, hi = wilson(same, len(theirs))
        print(f"{scale:5.2f} {same:5d}/{len(theirs):<4d} {same / len(theirs):7.3f} [{lo:.3f}, {hi:.3f}]"
              f" {w2v_s:14.2f} {py_s:14.2f} {py_s / w2v_s:6.1f}x")
        shown = 0
        for n, a, b in zip(names, ours, theirs):
            if a != b and shown < args.show:
                print(f"      {n}: w2v {a!r} pyctcdecode {b!r}")
                shown += 1


if __name__ == "__main__":
    main()
