#!/usr/bin/env python3
"""One fine-tuning step of the same model in w2v's trainer and in PyTorch eager, side by side.

The model is the shipped default model's architecture (tools/train-default-model/common.py's
model_config), randomly initialised with a fixed seed and saved as a Hugging Face folder; w2v
fine-tunes its `w2v export`. Both sides run the same batch, the same number of threads and the
same update: 16 utterances of exactly 1 s of real speech (Speech Commands clips from the
recipe's train split), CTC with mean reduction, gradients of everything but the frozen feature
encoder, clipping, AdamW. No masking and no dropout on either side (the exported graph has no
dropout), so the arithmetic matches. Each side runs in its own process, whose peak RSS is its own.

Prints the median step time of each (after 2 warm-up steps), the ratio, and the peak memory.

  tools/bench_train_step.py [--threads 2] [--steps 12] [--backends ort,tract] [--w2v target/release/w2v]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "tools" / "train-default-model"
CLIPS = 16
SR = 16000


def make_inputs(tmp: Path):
    """HF folder (random default-model architecture) and a TSV of 16 one-second clips."""
    sys.path.insert(0, str(RECIPE))
    import numpy as np
    import torch
    from common import model_config, save_hf_ctc  # noqa: E402
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(0)
    cfg = model_config(None, mask_time_prob=0.0, mask_feature_prob=0.0, layerdrop=0.0,
                       hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                       feat_proj_dropout=0.0, final_dropout=0.0)
    save_hf_ctc(Wav2Vec2ForCTC(cfg), tmp / "hf")
    rows = []
    for line in (RECIPE / "manifest" / "train.tsv").read_text().splitlines()[1:]:
        c = line.split("\t")
        if c[3].startswith("speech_commands"):
            rows.append(((RECIPE / "manifest" / c[0]).resolve(), c[1]))
        if len(rows) == CLIPS:
            break
    import soundfile as sf
    out = []
    for i, (path, text) in enumerate(rows):
        x, sr = sf.read(str(path), dtype="float32")
        assert sr == SR, path
        x = np.pad(x, (0, max(0, SR - len(x))))[:SR]
        p = tmp / f"clip{i:02d}.wav"
        with wave.open(str(p), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SR)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
        out.append(f"{p}\t{text}\n")
    (tmp / "data.tsv").write_text("".join(out))


def torch_worker(tmp: Path, threads: int, steps: int):
    import numpy as np
    import soundfile as sf
    import torch
    from transformers import Wav2Vec2ForCTC

    torch.set_num_threads(threads)
    model = Wav2Vec2ForCTC.from_pretrained(str(tmp / "hf"))
    model.freeze_feature_encoder()
    model.train()
    vocab = json.loads((tmp / "hf" / "vocab.json").read_text())
    xs, ys = [], []
    for line in (tmp / "data.tsv").read_text().splitlines():
        path, text = line.split("\t")
        x, _ = sf.read(path, dtype="float32")
        xs.append((x - x.mean()) / np.sqrt(x.var() + 1e-7))
        ys.append([vocab[ch] for ch in text.upper().replace(" ", "|")])
    x = torch.from_numpy(np.stack(xs))
    L = max(len(y) for y in ys)
    y = torch.full((len(ys), L), -100, dtype=torch.long)
    for i, t in enumerate(ys):
        y[i, :len(t)] = torch.tensor(t)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = model(x, labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
    print(json.dumps(dict(times=times, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--backends", default="ort,tract")
    ap.add_argument("--w2v", type=Path, default=REPO / "target" / "release" / "w2v")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return torch_worker(args.worker, args.threads, args.steps)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        make_inputs(tmp)
        subprocess.run([str(args.w2v), "export", str(tmp / "hf"), "-o", str(tmp / "model.onnx")],
                       check=True, capture_output=True)
        rows = []
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        r = subprocess.run([sys.executable, __file__, "--worker", str(tmp), "--threads", str(args.threads),
                            "--steps", str(args.steps)], check=True, capture_output=True, text=True, env=env)
        j = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(("PyTorch eager", statistics.median(j["times"][2:]), j["peak_mb"]))
        for backend in args.backends.split(","):
            out = tmp / f"run-{backend}"
            r = subprocess.run([str(args.w2v), "finetune", "--model", str(tmp / "model.onnx"), "--data",
                                str(tmp / "data.tsv"), "--output", str(out), "--steps", str(args.steps),
                                "--batch-seconds", str(CLIPS), "--lr", "1e-4", "--no-masking",
                                "--checkpoint-every", "1000000", "--backend", backend, "--threads",
                                str(args.threads), "--json"], check=True, capture_output=True, text=True)
            steps = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"step"')]
            report = json.loads(r.stdout[r.stdout.index("{\n"):])
            assert all(s.get("seconds") is not None for s in steps)
            rows.append((f"w2v finetune ({backend})", statistics.median(s["seconds"] for s in steps[2:]),
                         report["peak_memory_mb"]))
    base_t, base_m = rows[0][1], rows[0][2]
    print(f"one update: {CLIPS} utterances x 1 s, default-model architecture, {args.threads} threads, "
          f"median of {args.steps - 2} steps after 2 warm-up")
    print("| trainer | step time | vs PyTorch (speed) | peak memory | vs PyTorch |")
    print("|---|---:|---:|---:|---:|")
    for name, t, m in rows:
        print(f"| {name} | {t:.3f} s | {base_t / t:.2f}x | {m:.0f} MB | {m / base_m:.2f}x |")


if __name__ == "__main__":
    main()
