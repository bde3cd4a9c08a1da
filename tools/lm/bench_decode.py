#!/usr/bin/env python3
"""w2v's beam search beside pyctcdecode's, on the same logits and the same LM, in one run.

Writes a 200 003-word bigram ARPA (4-5 letter words, as test-support/src/lm.rs writes it for engine/benches/decode.rs) and
30 s of speech-like logits (1500 frames x the 32-token base-960h vocabulary, a peak of 8 for a
confident model and of 3 for an uncertain one), then times `w2v decode` (beam 100, LM weight 0.5,
word score 1.5, token pruning -5, beam pruning -10: pyctcdecode's defaults) and pyctcdecode's
`decode` with the same settings, and prints the seconds per 30 s decode and the ratio.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install pyctcdecode kenlm numpy
    /tmp/v/bin/python tools/lm/bench_decode.py --w2v target/release/w2v
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D",
         "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]


def word(i):
    w = ""
    for _ in range(4):
        w += chr(ord("a") + i % 26)
        i //= 26
    if i > 0:
        w += chr(ord("a") + i % 26)
    return w


def arpa(path):
    lines = ["\\data\\", "ngram 1=200003", "ngram 2=20000", "", "\\1-grams:",
             "-1.5\t<s>\t-0.3", "-1.2\t</s>", "-5.0\t<unk>"]
    lines += [f"-{3 + i % 4}.{i % 9973:04}\t{word(i)}\t-0.{i % 997:03}" for i in range(200_000)]
    lines += ["", "\\2-grams:"]
    lines += [f"-0.{i % 9973:04}\t{word(i * 7 % 200_000)} {word(i)}" for i in range(20_000)]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines))


def logits(peak_height, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1000, size=(1500, 32)).astype(np.float32) / 250.0 - 2.0
    for t in range(1500):
        peak = 0 if rng.integers(3) != 0 else 4 + rng.integers(28)
        x[t, peak] += peak_height
    # <s>, </s>, <unk>: never emitted by a CTC model; pyctcdecode would spell them as text.
    x[:, 1:4] = -30.0
    x -= x.max(axis=1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)


def time_w2v(w2v, npy, vocab, lm, copies, extra=()):
    args = [w2v, "decode", "--vocab", str(vocab), "--lm", str(lm), *extra]
    for _ in range(copies):
        args += ["--logits", str(npy)]
    t0 = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out.splitlines()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--w2v", default="target/release/w2v")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--show", action="store_true", help="print the transcripts")
    args = ap.parse_args()
    from pyctcdecode import build_ctcdecoder

    d = Path(tempfile.mkdtemp())
    lm = d / "big.arpa"
    arpa(lm)
    vocab = d / "vocab.json"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    labels = [""] + [t.lower() for t in VOCAB[1:]]
    labels[4] = " "
    t0 = time.perf_counter()
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(lm), alpha=0.5, beta=1.5)
    py_load = time.perf_counter() - t0
    rows = []
    for name, peak in [("confident (peak 8)", 8.0), ("uncertain (peak 3)", 3.0)]:
        x = logits(peak)
        npy = d / f"{peak}.npy"
        np.save(npy, x)
        # w2v: one process decoding the same logits 1 and 1 + runs times; the difference is
        # the decode time alone (no process start, no LM load).
        one, w2v_text = time_w2v(args.w2v, npy, vocab, lm, 1)
        many, _ = time_w2v(args.w2v, npy, vocab, lm, 1 + args.runs)
        w2v_s = (many - one) / args.runs
        # --pyctcdecode: pyctcdecode's own search rules, for the like-for-like transcript.
        one_p, w2v_py_text = time_w2v(args.w2v, npy, vocab, lm, 1, ["--pyctcdecode"])
        many_p, _ = time_w2v(args.w2v, npy, vocab, lm, 1 + args.runs, ["--pyctcdecode"])
        w2v_py_s = (many_p - one_p) / args.runs
        decoder.decode(x, beam_width=100)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.runs):
            py_text = decoder.decode(x, beam_width=100)
        py_s = (time.perf_counter() - t0) / args.runs
        if args.show:
            print(f"{name}\n  w2v:          {w2v_text.lower()[:200]}\n  w2v --pyctcdecode: {w2v_py_text.lower()[:200]}\n  pyctcdecode:  {py_text[:200]}")
        rows.append((name, w2v_s, w2v_py_s, py_s, w2v_py_text.lower() == py_text))
    print(f"pyctcdecode + kenlm build (LM load): {py_load:.2f} s; w2v decode process with LM load: {one:.2f} s")
    print(f"{'logits':22} {'w2v s':>8} {'w2v --pyctcdecode s':>20} {'pyctcdecode s':>14} {'ratios':>14}  same top transcript as --pyctcdecode")
    for name, w, wp, p, same in rows:
        print(f"{name:22} {w:8.4f} {wp:20.4f} {p:14.4f} {p / w:6.1f}x {p / wp:6.1f}x  {same}")


if __name__ == "__main__":
    main()
