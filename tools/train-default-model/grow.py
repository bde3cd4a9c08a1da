#!/usr/bin/env python3
"""Grow a trained Wav2Vec2ForCTC deeper without changing what it computes, so training can go on
from its weights with more capacity (Net2Net's "deeper" step, Chen et al. 2016).

  grow.py --from WORK/soup1011s/hf --layers 10 --out WORK/grow10/hf

Each new Transformer layer is a copy of the layer before it with the two projections that write
into the residual stream (attention `out_proj`, feed-forward `output_dense`) set to zero. With
the stable-layer-norm (pre-LN) layout every layer adds its output to its input, so a new layer
is the identity and the grown model's logits equal the original's (checked here on random
audio). Its other weights start as trained ones rather than random, and the zeroed projections
get gradients from the first update. The new layers are spread evenly between the old ones.
The updates count (`w2v-updates.json`) carries over, with a "grow" entry.
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from transformers import Wav2Vec2ForCTC
from transformers.utils import logging as hf_logging

from common import count_params, log, save_hf_ctc, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", type=Path, required=True, help="Hugging Face folder")
    ap.add_argument("--layers", type=int, required=True, help="Transformer layers of the result")
    ap.add_argument("--out", type=Path, required=True, help="Hugging Face folder to write")
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)

    model = Wav2Vec2ForCTC.from_pretrained(str(args.src))
    if not model.config.do_stable_layer_norm:
        sys.exit(f"error: {args.src}: grow.py needs the stable-layer-norm (pre-LN) layout, where a "
                 "layer with zeroed output projections is the identity")
    old = list(model.wav2vec2.encoder.layers)
    if args.layers <= len(old):
        sys.exit(f"error: --layers {args.layers}: {args.src} already has {len(old)} layers")
    model.eval()
    probe = torch.randn(2, 16000)
    with torch.no_grad():
        before = model(probe).logits

    # New layer k (of the extra ones) goes after old layer insert_after[k]: spread evenly.
    extra = args.layers - len(old)
    insert_after = [round((k + 1) * len(old) / (extra + 1)) - 1 for k in range(extra)]
    layers = []
    for i, layer in enumerate(old):
        layers.append(layer)
        for _ in range(insert_after.count(i)):
            new = copy.deepcopy(layer)
            for proj in (new.attention.out_proj, new.feed_forward.output_dense):
                torch.nn.init.zeros_(proj.weight)
                torch.nn.init.zeros_(proj.bias)
            layers.append(new)
    model.wav2vec2.encoder.layers = torch.nn.ModuleList(layers)
    model.config.num_hidden_layers = len(layers)
    with torch.no_grad():
        after = model(probe).logits
    diff = (after - before).abs().max().item()
    if diff > 1e-4:
        sys.exit(f"error: the grown model's logits differ from the original's by {diff:.2e}")
    log(f"grow: {len(old)} -> {len(layers)} layers (new after old layers {insert_after}), "
        f"{count_params(model) / 1e6:.2f} M parameters, max logit difference {diff:.1e}")

    save_hf_ctc(model, args.out)
    updates = args.src / "w2v-updates.json"
    if updates.exists():
        u = json.loads(updates.read_text())
        write_json(args.out / "w2v-updates.json", dict(
            total_updates=u["total_updates"],
            history=u["history"] + [dict(stage="grow", layers=len(layers), from_layers=len(old))]))
    log(f"grow: -> {args.out}")


if __name__ == "__main__":
    main()
