#!/usr/bin/env python3
"""Read the weights of a float32 model made by `w2v export` back into a Hugging Face
Wav2Vec2ForCTC folder, so that training can continue from the shipped model (`finetune.py --init
warm`) instead of starting over.

The exporter stores the Hugging Face config in the model's metadata (`w2v.config`) and names each
initializer after its state-dict key, with three changes that are undone here: linear weights are
stored transposed (`<key>.T`), the attention's query projection has the scaling head_dim^-0.5
folded into its weight and bias, and the positional convolution's weight norm is applied (the
folder gets g = |W| over the output and input channels, v = W, which gives W back). Group-norm
parameters are stored as [C, 1]. Weights stored as float16 (`w2v export --fp16-weights`, read
through a Cast to float32) are read as the float32 values the model computes with.

The result is checked: every parameter of the model must be filled, and the folder's logits on a
few seconds of noise must equal ONNX Runtime's on the same input within --tolerance.

    onnx_to_hf.py models/default.onnx -o WORK/warm-init/hf
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, save_hf_ctc, write_json  # noqa: E402
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402


def state_dict_from_onnx(model: onnx.ModelProto, cfg: Wav2Vec2Config) -> dict[str, np.ndarray]:
    scaling = (cfg.hidden_size // cfg.num_attention_heads) ** -0.5
    out = {}
    for init in model.graph.initializer:
        name = init.name
        if not (name.startswith("wav2vec2.") or name.startswith("lm_head.")):
            continue  # the graph's own constants (shapes, epsilons)
        w = numpy_helper.to_array(init).astype(np.float32)
        if name.endswith(".T"):
            name, w = name[:-2], w.T.copy()
        if ".attention.q_proj." in name:
            w = w / scaling
        if ".feature_extractor.conv_layers." in name and ".layer_norm." in name:
            w = w.reshape(-1)
        out[name] = w
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", type=Path, help="float32 model made by `w2v export`")
    ap.add_argument("-o", "--out", type=Path, required=True, help="Hugging Face folder to write")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| vs ONNX Runtime")
    ap.add_argument("--updates", type=int, default=None,
                    help="updates the model's weights have seen so far (recorded in w2v-updates.json "
                         "for finetune.py --init warm, which adds its own)")
    ap.add_argument("--note", default="", help="where those updates come from (for the record)")
    args = ap.parse_args()
    hf_logging.set_verbosity_error()

    m = onnx.load(str(args.onnx))
    meta = {p.key: p.value for p in m.metadata_props}
    if "w2v.config" not in meta:
        sys.exit(f"error: {args.onnx}: no w2v.config metadata (not a model made by `w2v export`)")
    if meta.get("w2v.precision", "fp32") != "fp32":
        sys.exit(f"error: {args.onnx}: not a float32 export (use the fp32 model, not int8/fp16)")
    cfg = Wav2Vec2Config(**json.loads(meta["w2v.config"]))
    sd = state_dict_from_onnx(m, cfg)

    model = Wav2Vec2ForCTC(cfg)
    target = model.state_dict()
    filled = {}
    for key, t in target.items():
        if key in sd:
            w = sd.pop(key)
        elif key.endswith("parametrizations.weight.original0") or key.endswith(".weight_g"):
            W = sd[key.rsplit(".", 3 if "parametrizations" in key else 1)[0] + ".weight"]
            w = np.sqrt((W.astype(np.float64) ** 2).sum(axis=(0, 1), keepdims=True)).astype(np.float32)
        elif key.endswith("parametrizations.weight.original1") or key.endswith(".weight_v"):
            w = sd[key.rsplit(".", 3 if "parametrizations" in key else 1)[0] + ".weight"]
        elif key.endswith("masked_spec_embed"):
            w = t.numpy()  # used only when training masks time steps: kept at its initial value
        else:
            sys.exit(f"error: {args.onnx}: no initializer for {key}")
        if tuple(w.shape) != tuple(t.shape):
            sys.exit(f"error: {args.onnx}: {key} has shape {w.shape}, the model expects {tuple(t.shape)}")
        filled[key] = torch.from_numpy(np.ascontiguousarray(w))
    sd.pop("wav2vec2.encoder.pos_conv_embed.conv.weight", None)
    if sd:
        sys.exit(f"error: {args.onnx}: initializers the model has no place for: {sorted(sd)[:5]}")
    model.load_state_dict(filled, strict=True)
    model.eval()

    # Check against ONNX Runtime on the same input.
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((1, 3 * 16000)).astype(np.float32)
    sess = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: x}
    ref = sess.run(["logits"], feeds)[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).logits.numpy()
    diff = float(np.abs(got - ref).max())
    log(f"logits vs ONNX Runtime: max |diff| {diff:.2e} over {ref.shape} (tolerance {args.tolerance:g})")
    if not diff <= args.tolerance:
        sys.exit(f"error: {args.onnx}: the converted weights do not reproduce the model's logits")
    save_hf_ctc(model, args.out)
    if args.updates is not None:
        write_json(args.out / "w2v-updates.json", dict(
            total_updates=args.updates, history=[dict(stage=args.note or str(args.onnx), updates=args.updates)]))
    log(f"-> {args.out}")


if __name__ == "__main__":
    main()
