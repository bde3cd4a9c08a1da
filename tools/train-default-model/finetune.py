#!/usr/bin/env python3
"""Stages 2 and 3: CTC training on the labeled data.

--init pretrained  (stage "finetune") starts from --pretrained (default WORK/pretrain/hf), as
                   in the paper: the CNN feature encoder stays frozen, a randomly initialised
                   linear CTC head over base-960h's 32 characters is added, and for the first
                   --freeze-fraction of the stage only that head is trained, then head +
                   Transformer.
--init warm        (stage "warm") continues training a model that was already trained, read from
                   --init-from (a Hugging Face folder; `onnx_to_hf.py models/default.onnx` makes
                   one from the shipped model), feature encoder included, so that each recipe
                   run adds updates to the shipped weights instead of starting over.
--init scratch     (stage "scratch") the paper's baseline: the same architecture (read from the
                   pre-training config) trained from random weights on the labels alone, feature
                   encoder included (a random CNN cannot stay frozen).

Both use the paper's fine-tuning recipe scaled to this model: SpecAugment-style masking of the
Transformer input (time spans M=10 starting with probability p=0.05, i.e. transformers'
mask_time_prob 0.5; channel spans of 16 with transformers' mask_feature_prob 0.1 -- the paper's
64-of-768 channels scaled to 256), Adam (0.9, 0.98) with the tri-stage learning-rate schedule
(warm-up 10 %, hold 40 %, exponential decay 50 %; 0.01x -> 1x -> 0.05x the peak), gradient
clipping, online noise + reverberation augmentation. Targets: the transcript upper-cased with "|"
between words, ids from base-960h's vocabulary.

Labeled training data: the train split of the manifest (speaker-disjoint from dev/test), the
espeak-ng utterances and the concatenated train phrases (WORK/synth/). Length-bucketed batches of
about --batch-seconds of audio, padded with zeros after per-clip normalization, no attention mask
(group-norm feature encoder: the exported model takes none either).

--hard-negatives FILE [FILE ...] adds clips that made the listener fire a command (hard-negative
mining on the training speakers' no-command stream, `mine_hard_negatives` in
tests/listen_accuracy.rs; a clip listed in several files counts once), each --hard-repeat times,
with their true transcripts (a digit's spelling, an empty transcript for noise).

--negatives adds training material for rejection (manifest/negatives-train.tsv, train speakers and
noise clips only): other words with their spelling, background-noise clips with an empty
transcript (each also band-limited), and --mixes training clips mixed with those real noise clips
at 0, 5, 10 and 20 dB SNR, half of them band-limited. The mixes are computed once, before the
first update.

At the end: greedy-decoding WER/CER on dev, dev phrases, test and test phrases (dev only is used
for any choice), a Hugging Face checkpoint in WORK/<stage>/hf/ and WORK/<stage>/done.json.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on a busy machine

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_WORK, MANIFEST, SR, Augmenter, Budget, atomic_torch_save, count_params,  # noqa: E402
                    data_rows, evaluate_ctc, load_audio_cache, log, model_config, pad_min, read_tsv,
                    rng_state, save_hf_ctc, seed_everything, set_rng_state, set_threads, text_to_ids,
                    tri_stage_lr, write_json, zero_mean_unit_var)
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402


def batches(lengths, max_samples, rng):
    """Shuffled, length-bucketed batches whose padded size stays under max_samples."""
    order = rng.permutation(len(lengths))
    out = []
    for k in range(0, len(order), 256):  # sort within random pools of 256
        pool = sorted(order[k:k + 256], key=lambda i: lengths[i])
        cur, longest = [], 0
        for i in pool:
            longest2 = max(longest, lengths[i])
            if cur and longest2 * (len(cur) + 1) > max_samples:
                out.append(cur)
                cur, longest2 = [], lengths[i]
            cur.append(i)
            longest = longest2
        if cur:
            out.append(cur)
    return [out[i] for i in rng.permutation(len(out))]


def make_negatives(work, cache, rows, audio, n_mixes, seed):
    """Rejection material (see the module doc): (rows, audio) to append to the training set."""
    from common import Augmenter, Utt
    neg = read_tsv(MANIFEST / "negatives-train.tsv")
    neg_audio = load_audio_cache(neg, cache / "negatives-train")
    words = [(u, a) for u, a in zip(neg, neg_audio) if u.text]
    noise = [a for u, a in zip(neg, neg_audio) if not u.text]
    rng = np.random.default_rng([seed, 40])
    out_rows, out_audio = [], []
    for u, a in words:
        out_rows.append(u)
        out_audio.append(a)
    for k, a in enumerate(noise):  # the clip, band-limited, and joined with another clip
        b = noise[int(rng.integers(len(noise)))]
        for v in (a, Augmenter.band_limit(a), np.concatenate([a, b])):
            out_rows.append(Utt(Path(f"noise-{k}"), "", "noise", "negatives"))
            out_audio.append(v.astype(np.float32))
    for i in rng.choice(len(rows), size=min(n_mixes, len(rows)), replace=False):
        x = audio[i]
        nz = noise[int(rng.integers(len(noise)))]
        nz = np.tile(nz, len(x) // len(nz) + 1)[:len(x)]
        snr = float(rng.choice([0.0, 5.0, 10.0, 20.0]))
        sig = np.sqrt(np.mean(x ** 2) + 1e-12)
        y = x + nz / (np.sqrt(np.mean(nz ** 2)) + 1e-12) * sig / 10 ** (snr / 20)
        if rng.random() < 0.5:
            y = Augmenter.band_limit(y)
        out_rows.append(rows[i])
        out_audio.append(y.astype(np.float32))
    log(f"negatives: {len(words)} word clips, {3 * len(noise)} noise clips (from {len(noise)}), "
        f"{len(out_rows) - len(words) - 3 * len(noise)} noisy mixes")
    return out_rows, out_audio


def evaluate_all(model, work, smoke, cache, out_dir):
    res = {}
    if not smoke:  # background noise of held-back clips: how often the transcript stays empty
        for name in ("dev", "test"):
            rows = [u for u in read_tsv(MANIFEST / f"negatives-{name}.tsv") if not u.text]
            r, pairs = evaluate_ctc(model, rows, load_audio_cache(rows, cache / f"negatives-{name}-noise"))
            empty = sum(1 for _, h in pairs if not h.strip())
            res[f"{name}_noise"] = dict(utterances=len(rows), empty=empty, empty_rate=empty / max(len(rows), 1))
            log(f"  {name + '_noise':12s} empty transcript {empty}/{len(rows)}")
    sets = {"dev": data_rows(work, "dev", smoke), "test": data_rows(work, "test", smoke),
            "dev_phrases": read_tsv(work / "synth" / "phrases" / "dev.tsv"),
            "test_phrases": read_tsv(work / "synth" / "phrases" / "test.tsv")}
    for name, rows in sets.items():
        audio = load_audio_cache(rows, cache / name)
        t = time.time()
        r, pairs = evaluate_ctc(model, rows, audio)
        res[name] = dict(wer=r.wer, cer=r.cer, utterances=r.utterances, words=r.words,
                         examples=r.examples, seconds=time.time() - t)
        with open(out_dir / f"hyp_{name}.tsv", "w") as f:
            f.write("path\treference\thypothesis\n")
            for u, (ref, hyp) in zip(rows, pairs):
                f.write(f"{u.path}\t{ref}\t{hyp}\n")
        log(f"  {name:12s} WER {100 * r.wer:6.2f} %  CER {100 * r.cer:6.2f} %  ({r.utterances} utts, "
            f"{time.time() - t:.0f} s)  e.g. {r.examples[0]}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--init", choices=["pretrained", "scratch", "warm"], required=True)
    ap.add_argument("--init-from", type=Path, default=None,
                    help="--init warm: the Hugging Face folder to continue from")
    ap.add_argument("--pretrained", type=Path, default=None,
                    help="--init pretrained: the pre-training stage's Hugging Face folder "
                         "(default WORK/pretrain/hf); --init scratch copies its architecture")
    ap.add_argument("--negatives", action="store_true",
                    help="add rejection material (other words, noise clips, noisy mixes)")
    ap.add_argument("--mixes", type=int, default=1500, help="--negatives: training clips mixed with real noise")
    ap.add_argument("--hard-negatives", type=Path, nargs="+", default=None, metavar="FILE",
                    help="manifests of clips that fired a command (tests/listen_accuracy.rs "
                         "mine_hard_negatives writes manifest/hard-negatives.tsv), trained on with "
                         "their true transcripts, --hard-repeat times each (a clip listed in "
                         "several files counts once)")
    ap.add_argument("--hard-repeat", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget of this stage")
    ap.add_argument("--steps", type=int, default=None, help="fixed number of updates (overrides --minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--batch-seconds", type=float, default=12.0, help="padded audio per update")
    ap.add_argument("--max-seconds", type=float, default=16.0, help="drop longer labeled clips")
    ap.add_argument("--mask-time-p", type=float, default=0.02, help="p: probability a step starts a time mask")
    ap.add_argument("--mask-time-length", type=int, default=10)
    ap.add_argument("--mask-channel-prob", type=float, default=0.05, help="transformers' mask_feature_prob")
    ap.add_argument("--mask-channel-length", type=int, default=16)
    ap.add_argument("--freeze-fraction", type=float, default=0.1,
                    help="pretrained init: train only the CTC head for this fraction of the stage")
    ap.add_argument("--p-noise", type=float, default=0.5, help="probability of added noise")
    ap.add_argument("--p-reverb", type=float, default=0.3, help="probability of reverberation")
    # Off by default since the third full run: with speed perturbation (0.6) and band limiting
    # (0.3) an update took 0.74 s instead of 0.42 s (the resampling runs in the training loop),
    # and 78 minutes from scratch ended at 47.1 % dev WER against 42.1 % without them.
    ap.add_argument("--p-speed", type=float, default=0.0,
                    help="probability of speed perturbation (factor 0.85-1.15; run 3 used 0.6)")
    ap.add_argument("--p-band", type=float, default=0.0,
                    help="probability of telephone-band limiting (8 kHz and back; run 3 used 0.3)")
    ap.add_argument("--engines", action="store_true",
                    help="also train on WORK/synth/engines/ (synth.py --n-engines: flite, festival, "
                         "Asterisk's real digit recordings)")
    ap.add_argument("--bf16", action="store_true",
                    help="run the forward pass under torch.autocast(bfloat16) on the CPU (weights, "
                         "optimizer and CTC loss stay float32); faster where the CPU has bf16 "
                         "dot-product instructions (AVX512_BF16/AMX), slower where it has not")
    ap.add_argument("--ckpt-every", type=float, default=300.0)
    ap.add_argument("--snapshot-every", type=float, default=0.0, metavar="SECONDS",
                    help="also save the weights as a Hugging Face folder OUT/snapshots/step-N/hf this "
                         "often once --snapshot-from of the stage has passed, for average.py "
                         "(0: never)")
    ap.add_argument("--snapshot-from", type=float, default=0.5,
                    help="fraction of the stage after which --snapshot-every applies")
    ap.add_argument("--label-minutes", type=float, default=None,
                    help="label budget: train on a seeded random subset of the labeled clips totalling "
                         "about this many minutes (the ablation's small budget); default: all")
    ap.add_argument("--out", type=Path, default=None,
                    help="stage folder (default WORK/finetune or WORK/scratch)")
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    stage = {"pretrained": "finetune", "scratch": "scratch", "warm": "warm"}[args.init]
    out_dir = args.out or args.work / stage
    if (out_dir / "done.json").exists():
        log(f"{stage}: done already,", out_dir / "done.json")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    seed_everything(args.seed + {"finetune": 0, "scratch": 1, "warm": 2}[stage])

    # ---- data
    train = data_rows(args.work, "train", args.smoke)
    synth = read_tsv(args.work / "synth" / "espeak" / "synth.tsv")
    phrases = read_tsv(args.work / "synth" / "phrases" / "train.tsv")
    cache = args.work / "cache"
    audio = (load_audio_cache(train, cache / "train") + load_audio_cache(synth, cache / "synth")
             + load_audio_cache(phrases, cache / "phrases-train"))
    rows = train + synth + phrases
    engines = []
    if args.engines:
        engines = read_tsv(args.work / "synth" / "engines" / "synth.tsv")
        audio += load_audio_cache(engines, cache / "engines")
        rows += engines
    keep = [i for i, a in enumerate(audio) if len(a) <= args.max_seconds * SR]
    rows, audio = [rows[i] for i in keep], [pad_min(audio[i], int(0.3 * SR)) for i in keep]
    if args.label_minutes is not None:
        pick, total = [], 0.0
        for i in np.random.default_rng([args.seed, 30]).permutation(len(rows)):
            if total >= args.label_minutes * 60:
                break
            pick.append(int(i))
            total += len(audio[i]) / SR
        pick.sort()
        rows, audio = [rows[i] for i in pick], [audio[i] for i in pick]
        log(f"label budget {args.label_minutes:g} min: {len(rows)} clips, {total / 60:.1f} min")
    if args.negatives:
        more_rows, more_audio = make_negatives(args.work, cache, rows, audio, args.mixes, args.seed)
        rows, audio = rows + more_rows, audio + [pad_min(a, int(0.3 * SR)) for a in more_audio]
    if args.hard_negatives:
        hard, hard_audio, seen = [], [], set()
        for f in args.hard_negatives:
            listed = read_tsv(f)
            for u, a in zip(listed, load_audio_cache(listed, cache / f"hard-{f.stem}")):
                if u.path not in seen:
                    seen.add(u.path)
                    hard.append(u)
                    hard_audio.append(pad_min(a, int(0.3 * SR)))
        rows = rows + hard * args.hard_repeat
        audio = audio + hard_audio * args.hard_repeat
        log(f"hard negatives: {len(hard)} clips x {args.hard_repeat} "
            f"({', '.join(str(f) for f in args.hard_negatives)})")
    labels = [text_to_ids(u.text) if u.text else [] for u in rows]
    lengths = [len(a) for a in audio]
    log(f"{stage} data: {len(train)} real + {len(synth)} espeak-ng + {len(phrases)} phrases "
        f"+ {len(engines)} other engines -> {len(rows)} clips <= {args.max_seconds:.0f} s, "
        f"{sum(lengths) / SR / 60:.1f} min")

    # ---- model
    pre = args.pretrained or args.work / "pretrain" / "hf"
    overrides = dict(mask_time_prob=args.mask_time_p * args.mask_time_length,
                     mask_time_length=args.mask_time_length, mask_time_min_masks=0,
                     mask_feature_prob=args.mask_channel_prob,
                     mask_feature_length=args.mask_channel_length, mask_feature_min_masks=0,
                     layerdrop=0.05, final_dropout=0.0, hidden_dropout=0.1, feat_proj_dropout=0.0,
                     architectures=["Wav2Vec2ForCTC"], vocab_size=32, pad_token_id=0,
                     ctc_loss_reduction="mean", ctc_zero_infinity=True)
    if args.init == "warm":
        if args.init_from is None or not (args.init_from / "config.json").exists():
            sys.exit(f"error: --init warm needs --init-from HF_FOLDER (got {args.init_from})")
        model = Wav2Vec2ForCTC.from_pretrained(str(args.init_from), **overrides)
    elif args.init == "pretrained":
        if not (pre / "config.json").exists():
            sys.exit(f"error: {pre} is missing; run pretrain.py first")
        model = Wav2Vec2ForCTC.from_pretrained(str(pre), **overrides)
        model.freeze_feature_encoder()
    else:
        if (pre / "config.json").exists():
            config = Wav2Vec2Config.from_pretrained(str(pre))
            for k, v in overrides.items():
                setattr(config, k, v)
        else:
            config = model_config(None, **overrides)
        model = Wav2Vec2ForCTC(config)
    model.train()
    log(f"model: {count_params(model) / 1e6:.2f} M parameters ({args.init} init, feature encoder "
        f"{'frozen' if args.init == 'pretrained' else 'trained'})")
    prior = json.loads((args.init_from / "w2v-updates.json").read_text()) if args.init == "warm" and (
        args.init_from / "w2v-updates.json").exists() else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.0)
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("lm_head")]
    freeze = args.freeze_fraction if args.init == "pretrained" else 0.0

    rng = np.random.default_rng([args.seed, {"finetune": 20, "scratch": 21, "warm": 22}[stage]])
    augment = Augmenter(rng, p_noise=args.p_noise, p_reverb=args.p_reverb, p_speed=args.p_speed,
                        p_band=args.p_band)
    ckpt = out_dir / "ckpt.pt"
    budget = Budget(args.minutes * 60, args.steps)
    epoch = 0
    curve = []  # (update, training seconds, learning rate, CTC loss): the loss curve
    if ckpt.exists():
        s = torch.load(ckpt, weights_only=False)
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        set_rng_state(s["rng"])
        rng.bit_generator.state = s["np_gen"]
        budget = Budget(args.minutes * 60, args.steps, spent=s["spent"], step=s["step"])
        epoch = s["epoch"]
        curve = s.get("curve", [])
        log(f"resumed at step {budget.step}, {budget.spent / 60:.1f} min spent")

    last_ckpt = last_log = last_snap = time.monotonic()
    hist, mid_eval_done, frozen = [], budget.progress >= 0.5, None
    while not budget.done():
        epoch += 1
        for b in batches(lengths, int(args.batch_seconds * SR), rng):
            if budget.done():
                break
            p = budget.progress
            if (p < freeze) != frozen:
                frozen = p < freeze
                for prm in body:
                    prm.requires_grad_(not frozen)
                log(f"step {budget.step}: {'only the CTC head trains' if frozen else 'head + Transformer train'}")
            lr = tri_stage_lr(p, args.lr)
            for gparam in opt.param_groups:
                gparam["lr"] = lr
            wav = [zero_mean_unit_var(augment(audio[i])) for i in b]
            x = np.zeros((len(b), max(len(a) for a in wav)), np.float32)
            for j, a in enumerate(wav):
                x[j, :len(a)] = a
            L = max(1, max(len(labels[i]) for i in b))  # a batch of noise clips has no labels
            y = torch.full((len(b), L), -100, dtype=torch.long)
            for j, i in enumerate(b):
                y[j, :len(labels[i])] = torch.tensor(labels[i])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = model(torch.from_numpy(x), labels=y).loss.float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(params, 5.0).item()
            if np.isfinite(gn) and np.isfinite(loss.item()):
                opt.step()
            else:
                log(f"step {budget.step}: non-finite loss/gradient, skipped")
            budget.step += 1
            hist.append(loss.item())
            curve.append((budget.step, round(budget.spent, 2), lr, round(loss.item(), 5)))
            now = time.monotonic()
            if now - last_log > (10 if args.smoke else 60):
                log(f"step {budget.step} ep {epoch} {100 * budget.progress:5.1f}% lr {lr:.2e} "
                    f"ctc {np.mean(hist[-20:]):.3f} gnorm {gn:.2f} | {budget.spent / max(budget.step, 1):.2f} s/step")
                last_log = now
            if now - last_ckpt > args.ckpt_every and not budget.done():
                atomic_torch_save(dict(model=model.state_dict(), opt=opt.state_dict(), rng=rng_state(),
                                       np_gen=rng.bit_generator.state, spent=budget.spent,
                                       step=budget.step, epoch=epoch, curve=curve), ckpt)
                last_ckpt = now
            if (args.snapshot_every > 0 and budget.progress >= args.snapshot_from
                    and now - last_snap > args.snapshot_every and not budget.done()):
                snap = out_dir / "snapshots" / f"step-{budget.step}" / "hf"
                save_weights(model, snap, prior, args.init, stage, budget)
                log(f"step {budget.step}: snapshot -> {snap}")
                last_snap = now
            if not mid_eval_done and budget.progress >= 0.5 and not args.smoke:
                mid_eval_done = True
                rows_dev = data_rows(args.work, "dev", args.smoke)
                pick = np.random.default_rng(args.seed).permutation(len(rows_dev))[:200]
                aud = load_audio_cache(rows_dev, cache / "dev")
                r, _ = evaluate_ctc(model, [rows_dev[i] for i in pick], [aud[i] for i in pick])
                log(f"half-way WER {100 * r.wer:.2f} % CER {100 * r.cer:.2f} % on 200 dev utterances")
                model.train()  # (evaluation time counts against the stage budget)

    train_minutes = budget.spent / 60
    log(f"{stage}: {budget.step} updates, {epoch} epochs, {train_minutes:.1f} min; evaluating")
    hf = out_dir / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    model.eval()
    save_weights(model, hf, prior, args.init, stage, budget)
    with open(out_dir / "curve.tsv", "w") as f:
        f.write("update\tseconds\tlr\tctc\n")
        f.writelines(f"{u}\t{t}\t{lr:.3e}\t{c}\n" for u, t, lr, c in curve)
    metrics = evaluate_all(model, args.work, args.smoke, cache, out_dir)
    write_json(out_dir / "done.json", dict(
        stage=stage, init=args.init, steps=budget.step, epochs=epoch, minutes=train_minutes,
        seconds_per_step=train_minutes * 60 / max(budget.step, 1), final_ctc=float(np.mean(hist[-50:])) if hist else None,
        train_clips=len(rows), train_audio_minutes=sum(lengths) / SR / 60, parameters=count_params(model),
        metrics=metrics, hf=str(hf), args=vars(args)))
    ckpt.unlink(missing_ok=True)
    log(f"{stage}: -> {hf}")


def save_weights(model, folder, prior, init, stage, budget):
    """The Hugging Face folder, with the updates the weights have seen over all runs
    (w2v-updates.json, for the model card)."""
    save_hf_ctc(model, folder)
    total = (prior["total_updates"] if prior else 0) + budget.step if init == "warm" else budget.step
    history = (prior["history"] if prior else []) + [
        dict(stage=stage, updates=budget.step, minutes=round(budget.spent / 60, 1))]
    write_json(folder / "w2v-updates.json", dict(total_updates=total, history=history))


if __name__ == "__main__":
    main()
