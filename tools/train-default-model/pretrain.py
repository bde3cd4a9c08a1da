#!/usr/bin/env python3
"""Stage 1: wav2vec 2.0 self-supervised pre-training (Baevski et al. 2020) on unlabeled audio.

Objective, as in the paper (and transformers' Wav2Vec2ForPreTraining, whose modules are used):
  * latent features z = CNN(x); spans of M=10 steps are masked, each step starting a span with
    probability p=0.065 (transformers' `mask_time_prob` is p*M = 0.65, `_compute_mask_indices`);
    masked steps are replaced by the learned mask embedding before the Transformer;
  * targets q = Gumbel-softmax product quantizer of z (G groups x V entries, straight-through,
    temperature annealed 2 -> 0.5);
  * contrastive loss: cosine similarity / kappa=0.1 of the context vector c_t with q_t against K
    distractors sampled uniformly from the OTHER masked steps of the same utterance
    (`_sample_negative_indices`); distractors equal to the positive are dropped (-inf);
  * + alpha=0.1 * codebook diversity loss (G*V - perplexity)/(G*V) of the batch's average
    soft code distribution over masked steps;
  * + 10 * L2 penalty on the CNN features (mean z^2); the CNN's gradient is scaled by 0.1.
  Losses are summed over masked steps and divided by their number (fairseq's sample size).
  The loss is computed on masked steps only (the unmasked ones carry weight 0 in transformers'
  forward anyway); `--check-objective` verifies it equals transformers' loss exactly.

Adaptation to short clips: the data are ~0.5-1 s words, too short for p=0.065/M=10 and K=100,
so each training example is a SEGMENT (default 3 s) made of random clips joined with 0-300 ms
gaps (one clip per segment when it is long enough); K=50 distractors (a 3 s segment has ~75
masked steps). Noise and reverberation augmentation (common.Augmenter) per segment.

--objective bestrq replaces the contrastive objective by masked prediction of FIXED targets
(BEST-RQ, Chiu et al. 2022), on the same Wav2Vec2 encoder, so that the weights load into the same
CTC fine-tuning: each 20 ms step's log-mel frame (80 bands, 25 ms window, the CNN's own frame grid,
normalized per segment) goes through a frozen random projection (80 -> 16) and is labelled with
the nearest of 512 frozen random unit vectors (cosine); the Transformer's output at the masked
steps predicts those labels through a linear head, cross-entropy. Nothing the model does can
change its targets, so it cannot collapse onto one shared vector as the contrastive objective does
at this batch size (the README's probes). Chance is the entropy of the labels' marginal
distribution (predicting the label frequencies), reported beside the loss, with the majority
label's share beside the accuracy.

Optimizer: Adam (0.9, 0.98), eps 1e-6, weight decay 0.01, peak LR 5e-4, 8 % linear warm-up then
linear decay, as in the paper. Stage length: wall clock (--minutes) or --steps (exactly
repeatable). Resumable: WORK/pretrain/ckpt.pt every --ckpt-every seconds.
Output: WORK/pretrain/hf/ (Wav2Vec2ForPreTraining) and done.json.
"""
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on a busy machine

import argparse  # noqa: E402
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_WORK, SR, Augmenter, Budget, atomic_torch_save, count_params,  # noqa: E402
                    data_rows, load_audio_cache, log, model_config, read_tsv, rng_state,
                    seed_everything, set_rng_state, set_threads, warmup_linear_lr, write_json,
                    zero_mean_unit_var)
from transformers import Wav2Vec2ForPreTraining  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from transformers.models.wav2vec2.modeling_wav2vec2 import (_compute_mask_indices,  # noqa: E402
                                                            _sample_negative_indices)


def add_arch_args(ap):
    g = ap.add_argument_group("architecture")
    g.add_argument("--conv-channels", type=int, default=128)
    g.add_argument("--conv-norm", choices=["group", "layer"], default="group",
                   help="feature-encoder normalization: group (first layer only, as wav2vec2-base; "
                        "no attention mask) or layer (every layer, as wav2vec2-large-lv60)")
    g.add_argument("--hidden", type=int, default=256)
    g.add_argument("--layers", type=int, default=6)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--ffn", type=int, default=1024)
    g.add_argument("--post-ln", action="store_true",
                   help="post-layer-norm Transformer (do_stable_layer_norm false, as wav2vec2-base); "
                        "default: pre-layer-norm")
    g.add_argument("--pos-conv-kernel", type=int, default=64)
    g.add_argument("--groups", type=int, default=2, help="quantizer codebooks G")
    g.add_argument("--entries", type=int, default=160, help="entries per codebook V")
    g.add_argument("--codevector-dim", type=int, default=128)
    g.add_argument("--proj-dim", type=int, default=128)
    g.add_argument("--negatives", type=int, default=50, help="K distractors")


class GradMult(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.scale, None


class Objective:
    """wav2vec 2.0 loss on a Wav2Vec2ForPreTraining, evaluated on the masked steps only."""

    def __init__(self, model: Wav2Vec2ForPreTraining, feature_grad_mult=0.1, feature_pen_weight=10.0):
        self.m, self.pen_w, self.grad_mult = model, feature_pen_weight, feature_grad_mult
        self._pen = None
        model.wav2vec2.feature_extractor.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        if self.grad_mult != 1.0 and torch.is_grad_enabled():
            out = GradMult.apply(out, self.grad_mult)
        self._pen = out.float().pow(2).mean()
        return out

    def quantize(self, x):
        """Wav2Vec2GumbelVectorQuantizer.forward on the (N, C) masked features, with the codebook
        lookup as a matmul instead of a (N, G*V, D) broadcast product (same result)."""
        qz = self.m.quantizer
        n, G, V = x.shape[0], qz.num_groups, qz.num_vars
        logits = qz.weight_proj(x).view(n * G, V)
        if self.m.training:
            probs = F.gumbel_softmax(logits.float(), tau=qz.temperature, hard=True).type_as(logits)
            marg = torch.softmax(logits.view(n, G, V).float(), dim=-1).mean(0)
        else:
            probs = F.one_hot(logits.argmax(-1), V).type_as(logits)
            marg = probs.view(n, G, V).float().mean(0)
        perplexity = torch.exp(-torch.sum(torch.xlogy(marg, marg), dim=-1)).sum()
        cv = qz.codevectors.view(G, V, -1)
        q = torch.einsum("ngv,gvd->ngd", probs.view(n, G, V), cv).reshape(n, -1)
        return q, perplexity

    def __call__(self, x, mask_np, neg_np):
        cfg = self.m.config
        B, T = mask_np.shape
        mask = torch.from_numpy(mask_np)
        out = self.m.wav2vec2(x, mask_time_indices=mask)
        c = self.m.project_hid(out.last_hidden_state[mask])                  # (N, P)
        feats = self.m.dropout_features(out.extract_features)[mask]          # (N, C)
        q, perplexity = self.quantize(feats)
        q = self.m.project_q(q)                                              # (N, P)
        # distractor indices: absolute b*T+t (from transformers) -> row in the masked list
        compact = np.full(B * T, -1, dtype=np.int64)
        flat = mask_np.reshape(-1)
        compact[flat] = np.arange(flat.sum())
        neg_idx = torch.from_numpy(compact[neg_np.reshape(B * T, -1)[flat]])  # (N, K)
        negs = q[neg_idx]                                                    # (N, K, P)
        targets = torch.cat([q[:, None], negs], dim=1)                       # (N, K+1, P)
        logits = F.cosine_similarity(c[:, None].float(), targets.float(), dim=-1)
        logits = logits / cfg.contrastive_logits_temperature
        neg_is_pos = (negs == q[:, None]).all(-1)
        if neg_is_pos.any():
            logits[:, 1:] = logits[:, 1:].masked_fill(neg_is_pos, float("-inf"))
        n = c.shape[0]
        zeros = torch.zeros(n, dtype=torch.long)
        contrastive = F.cross_entropy(logits, zeros, reduction="sum")
        num_cv = cfg.num_codevectors_per_group * cfg.num_codevector_groups
        diversity = (num_cv - perplexity) / num_cv * n
        loss = contrastive + cfg.diversity_loss_weight * diversity + self.pen_w * self._pen * n
        acc = (logits.argmax(-1) == 0).float().mean().item()
        return loss / n, dict(contrastive=contrastive.item() / n, diversity=diversity.item() / n,
                              feature_pen=self._pen.item(), perplexity=perplexity.item(),
                              accuracy=acc, masked=n)


class BestRqObjective:
    """BEST-RQ masked prediction of fixed random-projection codes (see the module doc)."""

    def __init__(self, model: Wav2Vec2ForPreTraining, seed: int, codes=512, dim=16, bands=80):
        g = torch.Generator().manual_seed(seed)
        self.m, self.codes = model, codes
        self.proj = torch.randn(bands, dim, generator=g) / bands ** 0.5           # frozen
        self.book = F.normalize(torch.randn(codes, dim, generator=g), dim=-1)     # frozen
        self.head = torch.nn.Linear(model.config.hidden_size, codes)
        self.mel = torch.from_numpy(mel_filterbank(bands)).float()                 # (bands, 257)
        self.window = torch.hann_window(400)
        self.counts = torch.ones(codes)  # label frequencies seen so far (add-one)

    def parameters(self):
        return list(self.m.wav2vec2.parameters()) + list(self.head.parameters())

    def targets(self, x):
        """(B, T) labels on the CNN's frame grid: 400-sample windows every 320 samples."""
        frames = x.unfold(1, 400, 320) * self.window                              # (B, T, 400)
        power = torch.fft.rfft(frames, n=512).abs() ** 2                         # (B, T, 257)
        logmel = torch.log(power @ self.mel.T + 1e-6)                            # (B, T, 80)
        logmel = (logmel - logmel.mean(1, keepdim=True)) / (logmel.std(1, keepdim=True) + 1e-5)
        z = F.normalize(logmel @ self.proj, dim=-1)
        return (z @ self.book.T).argmax(-1)

    def __call__(self, x, mask_np, neg_np=None):
        mask = torch.from_numpy(mask_np)
        with torch.no_grad():
            y = self.targets(x)[:, :mask.shape[1]][mask]
        out = self.m.wav2vec2(x, mask_time_indices=mask)
        logits = self.head(out.last_hidden_state[mask]).float()
        loss = F.cross_entropy(logits, y)
        self.counts += torch.bincount(y, minlength=self.codes).float()
        marg = self.counts / self.counts.sum()
        chance = float(-(marg * marg.log()).sum())
        acc = (logits.argmax(-1) == y).float().mean().item()
        return loss, dict(contrastive=loss.item(), diversity=0.0, feature_pen=0.0,
                          perplexity=float(torch.exp(torch.tensor(chance))), accuracy=acc,
                          chance=chance, majority=float(marg.max()), masked=int(y.numel()))


def mel_filterbank(bands: int, n_fft=512, sr=SR, fmin=20.0, fmax=SR / 2) -> np.ndarray:
    """Triangular mel filters (HTK mel scale) over the rfft bins, (bands, n_fft // 2 + 1)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(fmin), mel(fmax), bands + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((bands, len(freqs)))
    for i in range(bands):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        fb[i] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0.0, None)
    return fb


def sample_masks(B, T, cfg):
    mask = _compute_mask_indices((B, T), cfg.mask_time_prob, cfg.mask_time_length, min_masks=2)
    neg = _sample_negative_indices((B, T), cfg.num_negatives, mask)
    return mask, neg


def check_objective(model, obj, x):
    """The loss on masked steps equals transformers' Wav2Vec2ForPreTraining loss (eval mode:
    deterministic argmax quantizer, no dropout) with the feature penalty removed."""
    model.eval()
    B = x.shape[0]
    T = int(model._get_feat_extract_output_lengths(x.shape[1]))
    mask, neg = sample_masks(B, T, model.config)
    with torch.no_grad():
        ours, parts = obj(x, mask, neg)
        ours = ours - obj.pen_w * obj._pen
        ref = model(x, mask_time_indices=torch.from_numpy(mask),
                    sampled_negative_indices=torch.from_numpy(neg).long())
        ref = ref.loss / int(mask.sum())
    model.train()
    diff = abs(ours.item() - ref.item())
    log(f"objective check: ours {ours.item():.6f} vs transformers {ref.item():.6f} (|diff| {diff:.2e})")
    if diff > 1e-4 * max(1.0, abs(ref.item())):
        sys.exit("error: pre-training objective differs from transformers' Wav2Vec2ForPreTraining")


class SegmentSampler:
    """Fixed-length segments of randomly chosen (per-clip normalized) clips with short gaps."""

    def __init__(self, audio, seg_len, rng, augment):
        self.audio = [zero_mean_unit_var(a) * 0.1 for a in audio if len(a) > 1600]
        self.seg_len, self.rng, self.augment = seg_len, rng, augment

    def segment(self):
        parts, n = [], 0
        while n < self.seg_len:
            a = self.audio[self.rng.integers(len(self.audio))]
            if len(a) > self.seg_len:
                s = self.rng.integers(len(a) - self.seg_len + 1)
                a = a[s:s + self.seg_len]
            gap = np.zeros(int(self.rng.uniform(0.0, 0.3) * SR), np.float32)
            parts += [a, gap]
            n += len(a) + len(gap)
        x = np.concatenate(parts)
        off = self.rng.integers(0, len(x) - self.seg_len + 1)
        x = x[off:off + self.seg_len]
        return zero_mean_unit_var(self.augment(x))

    def batch(self, B):
        return torch.from_numpy(np.stack([self.segment() for _ in range(B)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-clock budget of this stage")
    ap.add_argument("--steps", type=int, default=None, help="fixed number of updates (overrides --minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=8, help="segments per update")
    ap.add_argument("--segment-seconds", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=float, default=0.08,
                    help="share of the stage spent warming the learning rate up linearly (the paper: "
                         "8 %% of 400 k updates, i.e. 32 k)")
    ap.add_argument("--mask-prob", type=float, default=0.065, help="p: probability a step starts a span")
    ap.add_argument("--mask-length", type=int, default=10, help="M: span length in steps")
    ap.add_argument("--gumbel", type=float, nargs=2, default=(2.0, 0.5), help="temperature start end")
    ap.add_argument("--feature-pen", type=float, default=10.0, help="weight of the L2 feature penalty")
    ap.add_argument("--feature-grad-mult", type=float, default=0.1, help="gradient scale of the CNN")
    ap.add_argument("--diversity-weight", type=float, default=0.1, help="alpha")
    ap.add_argument("--p-noise", type=float, default=0.5, help="probability of added noise")
    ap.add_argument("--p-reverb", type=float, default=0.3, help="probability of reverberation")
    ap.add_argument("--ckpt-every", type=float, default=300.0, help="seconds between resumable checkpoints")
    ap.add_argument("--check-objective", action="store_true", help="compare the loss with transformers' first")
    ap.add_argument("--objective", choices=["contrastive", "bestrq"], default="contrastive",
                    help="the paper's contrastive loss, or masked prediction of fixed random-projection "
                         "codes (BEST-RQ; see above)")
    ap.add_argument("--out", type=Path, default=None, help="stage folder (default WORK/pretrain)")
    add_arch_args(ap)
    args = ap.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    out_dir = args.out or args.work / "pretrain"
    if (out_dir / "done.json").exists():
        log("pretrain: done already,", out_dir / "done.json")
        return
    set_threads(args.threads)
    seed_everything(args.seed)

    real = data_rows(args.work, "train", args.smoke)
    synth = read_tsv(args.work / "synth" / "espeak" / "synth.tsv")
    rows = real + synth
    t = time.time()
    audio = (load_audio_cache(real, args.work / "cache" / "train")
             + load_audio_cache(synth, args.work / "cache" / "synth"))
    secs = sum(len(a) for a in audio) / SR
    log(f"pretrain data: {len(rows)} clips, {secs / 60:.1f} min (train speakers + espeak-ng), "
        f"loaded in {time.time() - t:.1f} s")

    config = model_config(args, mask_time_prob=args.mask_prob * args.mask_length,
                          mask_time_length=args.mask_length, mask_time_min_masks=2,
                          mask_feature_prob=0.0, diversity_loss_weight=args.diversity_weight)
    config.architectures = ["Wav2Vec2ForPreTraining"]
    model = Wav2Vec2ForPreTraining(config)
    model.train()
    if args.objective == "bestrq":
        obj = BestRqObjective(model, seed=args.seed)
        params = obj.parameters()
    else:
        obj = Objective(model, feature_grad_mult=args.feature_grad_mult, feature_pen_weight=args.feature_pen)
        params = list(model.parameters())
    log(f"model: {count_params(model) / 1e6:.2f} M parameters with quantizer, "
        f"{count_params(model.wav2vec2) / 1e6:.2f} M in the encoder")
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    rng = np.random.default_rng([args.seed, 10])
    sampler = SegmentSampler(audio, int(args.segment_seconds * SR), rng, Augmenter(rng, p_noise=args.p_noise, p_reverb=args.p_reverb))
    seg = int(args.segment_seconds * SR)
    T = int(model._get_feat_extract_output_lengths(seg))

    if args.check_objective and args.objective == "contrastive":
        check_objective(model, obj, sampler.batch(2))

    ckpt = out_dir / "ckpt.pt"
    budget = Budget(args.minutes * 60, args.steps)
    curve = []  # (update, training seconds, lr, loss, contrastive, accuracy, feature penalty)
    if ckpt.exists():
        s = torch.load(ckpt, weights_only=False)
        model.load_state_dict(s["model"])
        if args.objective == "bestrq":
            obj.head.load_state_dict(s["head"])
            obj.counts = s["counts"]
        opt.load_state_dict(s["opt"])
        set_rng_state(s["rng"])
        rng.bit_generator.state = s["np_gen"]
        budget = Budget(args.minutes * 60, args.steps, spent=s["spent"], step=s["step"])
        curve = s.get("curve", [])
        log(f"resumed at step {budget.step}, {budget.spent / 60:.1f} min spent")

    last_ckpt, last_log, hist = time.monotonic(), time.monotonic(), []
    t0_tau, t1_tau = args.gumbel
    while not budget.done():
        p = budget.progress
        lr = warmup_linear_lr(p, args.lr, args.warmup)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        tau = max(t1_tau, t0_tau * (t1_tau / t0_tau) ** min(p / 0.7, 1.0))
        if args.objective == "contrastive":
            model.set_gumbel_temperature(tau)
        x = sampler.batch(args.batch)
        mask, neg = sample_masks(args.batch, T, config)
        loss, parts = obj(x, mask, neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 5.0).item()
        if not np.isfinite(gn):
            log(f"step {budget.step}: non-finite gradient, skipped")
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
        budget.step += 1
        hist.append(dict(loss=loss.item(), **parts))
        curve.append((budget.step, round(budget.spent, 2), lr, round(loss.item(), 5), round(parts["contrastive"], 5),
                      round(parts["accuracy"], 5), round(parts["feature_pen"], 6)))
        now = time.monotonic()
        if now - last_log > (10 if args.smoke else 60) or budget.done():
            k = hist[-20:]
            avg = {key: float(np.mean([h[key] for h in k])) for key in k[0]}
            if args.objective == "bestrq":
                log(f"step {budget.step} {100 * budget.progress:5.1f}% lr {lr:.2e} loss {avg['loss']:.3f} "
                    f"(chance: label entropy {avg['chance']:.3f}) acc {avg['accuracy']:.3f} "
                    f"(majority {avg['majority']:.3f}) gnorm {gn:.2f} | "
                    f"{budget.spent / max(budget.step, 1):.2f} s/step")
            else:
                log(f"step {budget.step} {100 * budget.progress:5.1f}% lr {lr:.2e} tau {tau:.2f} "
                    f"loss {avg['loss']:.3f} (contr {avg['contrastive']:.3f} div {avg['diversity']:.3f} "
                    f"pen {avg['feature_pen']:.3f}) acc {avg['accuracy']:.3f} ppl {avg['perplexity']:.1f} "
                    f"gnorm {gn:.2f} | {budget.spent / max(budget.step, 1):.2f} s/step")
            last_log = now
        if now - last_ckpt > args.ckpt_every and not budget.done():
            extra = (dict(head=obj.head.state_dict(), counts=obj.counts)
                     if args.objective == "bestrq" else {})
            atomic_torch_save(dict(model=model.state_dict(), opt=opt.state_dict(), rng=rng_state(),
                                   np_gen=rng.bit_generator.state, spent=budget.spent,
                                   step=budget.step, curve=curve, **extra), ckpt)
            last_ckpt = now

    hf = out_dir / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    model.save_pretrained(str(hf), safe_serialization=True)
    with open(out_dir / "curve.tsv", "w") as f:
        f.write("update\tseconds\tlr\tloss\tcontrastive\taccuracy\tfeature_pen\n")
        f.writelines("\t".join(str(v) for v in row) + "\n" for row in curve)
    k = hist[-50:] or [dict(loss=float("nan"), accuracy=float("nan"), perplexity=float("nan"))]
    write_json(out_dir / "done.json", dict(
        stage="pretrain", steps=budget.step, minutes=budget.spent / 60, seconds_per_step=budget.spent / max(budget.step, 1),
        batch=args.batch, segment_seconds=args.segment_seconds, audio_hours_seen=budget.step * args.batch * args.segment_seconds / 3600,
        data_clips=len(rows), data_minutes=secs / 60,
        final_loss=float(np.mean([h["loss"] for h in k])),
        final_accuracy=float(np.mean([h["accuracy"] for h in k])),
        final_perplexity=float(np.mean([h["perplexity"] for h in k])),
        objective=args.objective,
        chance=float(np.mean([h["chance"] for h in k])) if args.objective == "bestrq" else float(np.log(args.negatives + 1)),
        majority=float(np.mean([h["majority"] for h in k])) if args.objective == "bestrq" else 1.0 / (args.negatives + 1),
        parameters=count_params(model), args=vars(args)))
    ckpt.unlink(missing_ok=True)
    log(f"pretrain: {budget.step} steps in {budget.spent / 60:.1f} min -> {hf}")


if __name__ == "__main__":
    main()
