#!/usr/bin/env python3
"""Checkpoint averaging: the element-wise mean of the weights of several Hugging Face
Wav2Vec2ForCTC folders of one architecture (as fairseq's scripts/average_checkpoints.py does for
the last checkpoints of a run), saved as a Hugging Face folder and evaluated like a training
stage (greedy WER on dev, test and the phrases, noise clips left empty: OUT/done.json).

  average.py --work WORK --out WORK/avg89 WORK/warm8/hf WORK/warm9/hf

Average checkpoints that share their start: late checkpoints of one run, a run and the run that
continued from it, or runs that each continued from the same weights with other seeds and
augmentation (a "model soup": the model shipped on 2026-12-06 before run 26 was the mean of runs 10
and 11's last two checkpoints each). The mean of unrelated models is not a model. The updates count
(`w2v-updates.json`) is the largest of the inputs' (the longest trajectory), whose history it
keeps, plus an "average" entry giving each input's folder, count and last stage.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import Wav2Vec2ForCTC
from transformers.utils import logging as hf_logging

from common import DEFAULT_WORK, count_params, log, save_hf_ctc, set_threads, write_json
from finetune import evaluate_all


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+", help="Hugging Face folders to average")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    if len(args.folders) < 2:
        sys.exit("error: average.py needs at least two folders")
    set_threads(args.threads)

    models = [Wav2Vec2ForCTC.from_pretrained(str(f)) for f in args.folders]
    states = [m.state_dict() for m in models]
    keys = set(states[0])
    for f, s in zip(args.folders[1:], states[1:]):
        if set(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            sys.exit(f"error: {f}: not the architecture of {args.folders[0]}")
    mean = {}
    for k in states[0]:
        t = states[0][k]
        mean[k] = (torch.stack([s[k].double() for s in states]).mean(0).to(t.dtype)
                   if t.is_floating_point() else t)
    model = models[0]
    model.load_state_dict(mean)
    model.eval()
    log(f"average of {len(args.folders)} checkpoints ({count_params(model) / 1e6:.2f} M parameters)")

    hf = args.out / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_hf_ctc(model, hf)
    updates = {f: json.loads((f / "w2v-updates.json").read_text()) for f in args.folders
               if (f / "w2v-updates.json").exists()}
    if updates:
        best = max(updates.values(), key=lambda u: u["total_updates"])
        # Each input's own count and last stage, so an average of two branches (runs that each
        # continued from the same weights) shows both.
        of = [dict(folder=str(f), total_updates=u["total_updates"], last=u["history"][-1])
              for f, u in updates.items()]
        write_json(hf / "w2v-updates.json", dict(
            total_updates=best["total_updates"], history=best["history"] + [dict(stage="average", of=of)]))
    metrics = evaluate_all(model, args.work, args.smoke, args.work / "cache", args.out)
    write_json(args.out / "done.json", dict(stage="average", folders=[str(f) for f in args.folders],
                                            metrics=metrics, hf=str(hf)))
    log(f"average: -> {hf}")


if __name__ == "__main__":
    main()
