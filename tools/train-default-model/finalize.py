#!/usr/bin/env python3
"""Pick the shipped model, check the Hugging Face checkpoint, write results and the model card.

* Reads WORK/finetune/done.json (pre-trained + fine-tuned) and WORK/scratch/done.json (baseline
  from scratch); ships the one with the lower DEV WER (ties: the pre-trained one). Test numbers
  are reported, never used for the choice.
* Copies its folder to WORK/final/hf/ and checks it: the five files exist, vocab.json is
  base-960h's vocabulary id for id, config.json says Wav2Vec2ForCTC with the group-norm encoder,
  and Wav2Vec2ForCTC.from_pretrained loads it and greedy-decodes a test clip to the same text the
  training script wrote.
* Writes WORK/final/results.json and WORK/final/model-card.md (model-card-template.md filled in;
  copy it to models/README.md when shipping).
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_WORK, HERE, TOKEN_ID, ctc_greedy_decode, data_rows, load_audio,  # noqa: E402
                    log, read_json, write_json, zero_mean_unit_var, pad_min)

REQUIRED = ["config.json", "vocab.json", "preprocessor_config.json", "tokenizer_config.json",
            "model.safetensors"]


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f} %"


def check_checkpoint(hf: Path, work: Path, smoke: bool):
    import torch
    from transformers import Wav2Vec2ForCTC
    missing = [f for f in REQUIRED if not (hf / f).exists()]
    if missing:
        sys.exit(f"error: {hf} lacks {missing}")
    vocab = json.loads((hf / "vocab.json").read_text())
    if vocab != TOKEN_ID or list(vocab) != list(TOKEN_ID):
        sys.exit("error: vocab.json differs from facebook/wav2vec2-base-960h's vocabulary")
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["architectures"] == ["Wav2Vec2ForCTC"], cfg["architectures"]
    assert cfg["feat_extract_norm"] == "group", "needs the group-norm feature encoder (no attention mask)"
    assert cfg["vocab_size"] == 32 and cfg["pad_token_id"] == 0
    model = Wav2Vec2ForCTC.from_pretrained(str(hf)).eval()
    row = data_rows(work, "test", smoke)[0]
    x = torch.from_numpy(zero_mean_unit_var(pad_min(load_audio(row.path))))[None]
    with torch.inference_mode():
        hyp = ctc_greedy_decode(model(x).logits[0].argmax(-1).tolist())
    log(f"reloaded {hf} with Wav2Vec2ForCTC.from_pretrained; {row.path.name}: ref {row.text!r} hyp {hyp!r}")
    return dict(path=str(row.path), reference=row.text, hypothesis=hyp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--command", default="tools/train-default-model/run.sh", help="recorded in the card")
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    runs = {}
    for stage in ("finetune", "scratch"):
        f = args.work / stage / "done.json"
        if f.exists():
            runs[stage] = read_json(f)
    if "finetune" not in runs and "scratch" not in runs:
        sys.exit("error: no finished fine-tuning stage in " + str(args.work))
    ship = min(runs, key=lambda s: (runs[s]["metrics"]["dev"]["wer"], s != "finetune"))
    log(f"shipping {ship} (dev WER: " + ", ".join(
        f"{s} {pct(r['metrics']['dev']['wer'])}" for s, r in runs.items()) + ")")
    final = args.work / "final"
    hf = final / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    shutil.copytree(Path(runs[ship]["hf"]), hf)
    decoded = check_checkpoint(hf, args.work, args.smoke)

    pre = read_json(args.work / "pretrain" / "done.json") if (args.work / "pretrain" / "done.json").exists() else {}
    cfg = json.loads((hf / "config.json").read_text())
    results = dict(shipped=ship, runs=runs, pretrain=pre, decoded_example=decoded,
                   date=datetime.date.today().isoformat(), smoke=args.smoke)
    write_json(final / "results.json", results)

    def m(stage, split, key="wer"):
        r = runs.get(stage)
        return pct(r["metrics"][split][key]) if r else "n/a"

    fill = {
        "date": results["date"],
        "command": args.command,
        "parameters": f"{runs[ship]['parameters'] / 1e6:.2f} M",
        "conv_channels": str(cfg["conv_dim"][0]),
        "hidden": str(cfg["hidden_size"]),
        "layers": str(cfg["num_hidden_layers"]),
        "heads": str(cfg["num_attention_heads"]),
        "ffn": str(cfg["intermediate_size"]),
        "layer_norm": ("pre-layer-norm (`do_stable_layer_norm: true`)" if cfg["do_stable_layer_norm"]
                       else "post-layer-norm (`do_stable_layer_norm: false`)"),
        "pos_conv": f"{cfg['num_conv_pos_embeddings']} (groups {cfg['num_conv_pos_embedding_groups']})",
        "shipped": {"finetune": "pre-trained + fine-tuned", "scratch": "from scratch (baseline)"}[ship],
        "pretrain_minutes": f"{pre.get('minutes', 0):.0f}",
        "pretrain_steps": str(pre.get("steps", "n/a")),
        "pretrain_hours": f"{pre.get('audio_hours_seen', 0):.1f}",
        "finetune_minutes": f"{runs.get('finetune', {}).get('minutes', 0):.0f}",
        "finetune_steps": str(runs.get("finetune", {}).get("steps", "n/a")),
        "scratch_minutes": f"{runs.get('scratch', {}).get('minutes', 0):.0f}",
        "scratch_steps": str(runs.get("scratch", {}).get("steps", "n/a")),
        "ft_lr": f"{runs.get(ship, {}).get('args', {}).get('lr', float('nan')):g}",
    }
    for stage, short in (("finetune", "ft"), ("scratch", "scratch")):
        for split in ("dev", "test", "test_phrases"):
            fill[f"{short}_{split}_wer"] = m(stage, split)
            fill[f"{short}_{split}_cer"] = m(stage, split, "cer")
    if runs.get("finetune") and runs.get("scratch"):
        a, b = runs["finetune"]["metrics"]["test"]["wer"], runs["scratch"]["metrics"]["test"]["wer"]
        fill["pretraining_helped"] = ("yes" if a < b else "no") + \
            f" (test WER {pct(a)} pre-trained vs {pct(b)} from scratch)"
    else:
        fill["pretraining_helped"] = "n/a"
    template = (HERE / "model-card-template.md").read_text()
    card = re.sub(r"\{\{(\w+)\}\}", lambda mm: fill.get(mm.group(1), mm.group(0)), template)
    (final / "model-card.md").write_text(card)
    left = sorted(set(re.findall(r"\{\{(\w+)\}\}", card)))
    log(f"results -> {final / 'results.json'}; model card -> {final / 'model-card.md'}"
        + (f" (unfilled: {left})" if left else ""))
    for s, r in runs.items():
        mm = r["metrics"]
        log(f"  {s:8s} dev WER {pct(mm['dev']['wer'])}  test WER {pct(mm['test']['wer'])}  "
            f"test phrases WER {pct(mm['test_phrases']['wer'])}  ({r['steps']} updates, {r['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
