"""Shared helpers for the default-model recipe: paths, vocabulary, audio, augmentation, model
config, CTC decoding, WER, schedules, budgets and resumable checkpoints.

Everything here is deterministic given the seeds the stage scripts set (python `random`, numpy's
global RNG, which transformers' `_compute_mask_indices` uses, and torch).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: no spin-waiting

import csv
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_DATA = (REPO / ".." / "shared" / "data").resolve()
MANIFEST = HERE / "manifest"
DEFAULT_WORK = HERE / "work"
SR = 16000

# facebook/wav2vec2-base-960h's character vocabulary, id for id.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D",
         "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD_ID = 0

# Domain words (those in ../shared/data) and the extra phrase words used only in synthesis.
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
DIRECTIONS = ["up", "down", "left", "right"]


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def seed_everything(seed: int):
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def set_threads(n: int):
    import torch
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


# ---------------------------------------------------------------- text

def normalize_text(s: str) -> str:
    """Lowercase words separated by single spaces (what the manifests store)."""
    return " ".join(s.lower().split())


def text_to_ids(text: str) -> list[int]:
    """'go left' -> ids of G O | L E F T. Raises on characters outside the vocabulary."""
    out = []
    for w_i, word in enumerate(normalize_text(text).split(" ")):
        if w_i:
            out.append(TOKEN_ID["|"])
        for ch in word.upper():
            if ch not in TOKEN_ID:
                raise ValueError(f"character {ch!r} of {text!r} is not in the vocabulary")
            out.append(TOKEN_ID[ch])
    return out


def ctc_greedy_decode(ids) -> str:
    """Collapse repeats, drop <pad>/specials, '|' -> space (as Wav2Vec2CTCTokenizer does)."""
    out, prev = [], None
    for i in ids:
        i = int(i)
        if i != prev and i != PAD_ID:
            out.append(i)
        prev = i
    text = "".join(" " if VOCAB[i] == "|" else VOCAB[i] for i in out if i > 3)
    return " ".join(text.lower().split())


def edit_distance(ref: list, hyp: list) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_rates(pairs) -> dict:
    """pairs: iterable of (reference, hypothesis) strings -> WER/CER over the whole set."""
    we = wn = ce = cn = 0
    for ref, hyp in pairs:
        r, h = normalize_text(ref), normalize_text(hyp)
        we += edit_distance(r.split(), h.split())
        wn += len(r.split())
        ce += edit_distance(list(r), list(h))
        cn += len(r)
    return {"wer": we / max(wn, 1), "cer": ce / max(cn, 1), "words": wn, "word_errors": we}


# ---------------------------------------------------------------- manifests

@dataclass
class Utt:
    path: Path          # absolute
    text: str           # lowercase words
    speaker: str = ""
    source: str = ""


def read_tsv(path: Path) -> list[Utt]:
    """`path<TAB>transcript[<TAB>speaker<TAB>source...]` rows, header allowed, paths relative to the TSV."""
    rows = []
    with open(path, newline="") as f:
        for i, r in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if not r or r[0].startswith("#"):
                continue
            if i == 0 and r[0] == "path":
                continue
            p = Path(r[0])
            p = p if p.is_absolute() else (path.parent / p)
            rows.append(Utt(Path(os.path.normpath(p)), normalize_text(r[1]),
                            r[2] if len(r) > 2 else "", r[3] if len(r) > 3 else ""))
    return rows


def write_tsv(path: Path, rows: list[Utt], extra_header=("speaker", "source")):
    """Writes paths relative to the TSV's folder (what `w2v eval --data` expects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("\t".join(("path", "transcript") + tuple(extra_header)) + "\n")
        for u in rows:
            rel = os.path.relpath(u.path, path.parent)
            f.write("\t".join([rel, u.text, u.speaker, u.source]) + "\n")
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- audio

def resample(x: np.ndarray, sr: int, target: int = SR) -> np.ndarray:
    if sr == target:
        return x.astype(np.float32)
    from scipy.signal import resample_poly
    g = math.gcd(sr, target)
    return resample_poly(x.astype(np.float64), target // g, sr // g).astype(np.float32)


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz."""
    import soundfile as sf
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), sr)


def save_wav(path: Path, x: np.ndarray, sr: int = SR):
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.99:
        x = x * (0.99 / peak)
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")


def zero_mean_unit_var(x: np.ndarray) -> np.ndarray:
    """Wav2Vec2FeatureExtractor's do_normalize (the engine applies the same at inference)."""
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


def trim_silence(x: np.ndarray, frame: int = 320, rel_db: float = -35.0, pad: int = 1600) -> np.ndarray:
    """Cut leading/trailing frames quieter than `rel_db` below the loudest frame (keeps `pad`)."""
    n = len(x) // frame
    if n < 3:
        return x
    e = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    on = np.nonzero(20 * np.log10(e / e.max()) > rel_db)[0]
    if len(on) == 0:
        return x
    a = max(0, on[0] * frame - pad)
    b = min(len(x), (on[-1] + 1) * frame + pad)
    return x[a:b]


def load_audio_cache(rows: list[Utt], cache: Path) -> list[np.ndarray]:
    """Decoded, resampled audio for `rows`, cached in one .npz keyed by path (rebuilt if stale)."""
    key = hashlib.sha256("\n".join(str(u.path) for u in rows).encode()).hexdigest()[:16]
    f = cache.parent / f"{cache.stem}-{key}.npz"
    if f.exists():
        z = np.load(f)
        return [z[f"a{i}"] for i in range(len(rows))]
    out = [load_audio(u.path) for u in rows]
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npz")  # processes may build it side by side
    np.savez(tmp, **{f"a{i}": a for i, a in enumerate(out)})
    tmp.replace(f)
    return out


class Augmenter:
    """Additive noise (white / pink / brown, 0-30 dB SNR) and synthetic-room reverberation
    (exponentially decaying noise impulse response, RT60 0.15-0.8 s), each with a probability.

    For CTC training two more, off by default (pre-training cuts fixed-length segments):
    speed perturbation (resampling by a factor in `speed`, which moves tempo, pitch and
    formants together, as Kaldi's 3-way speed perturbation, so the few digit speakers look like
    more), and telephone-band limiting (through 8 kHz and back), so 16 kHz speech also looks like
    the 8 kHz digit recordings."""

    def __init__(self, rng: np.random.Generator, p_noise=0.5, p_reverb=0.3, snr_db=(0.0, 30.0),
                 rt60=(0.15, 0.8), p_speed=0.0, speed=(0.85, 1.15), p_band=0.0):
        self.rng, self.p_noise, self.p_reverb = rng, p_noise, p_reverb
        self.snr_db, self.rt60 = snr_db, rt60
        self.p_speed, self.speed, self.p_band = p_speed, speed, p_band

    def perturb_speed(self, x: np.ndarray) -> np.ndarray:
        # Linear interpolation: ~50x cheaper than a polyphase filter, and what little aliasing a
        # 15 % speed-up folds in lies above 7 kHz, where speech has little energy.
        f = self.rng.uniform(*self.speed)  # > 1: faster (shorter)
        t = np.arange(0.0, len(x) - 1, f)
        return np.interp(t, np.arange(len(x)), x).astype(np.float32)

    @staticmethod
    def band_limit(x: np.ndarray) -> np.ndarray:
        from scipy.signal import resample_poly
        y = resample_poly(resample_poly(x.astype(np.float64), 1, 2), 2, 1)[: len(x)]
        return np.pad(y, (0, len(x) - len(y))).astype(np.float32)

    def noise(self, n: int) -> np.ndarray:
        w = self.rng.standard_normal(n).astype(np.float32)
        kind = self.rng.integers(3)
        if kind == 0:
            return w
        spec = np.fft.rfft(w)
        f = np.arange(len(spec), dtype=np.float32)
        f[0] = 1.0
        spec = spec / (np.sqrt(f) if kind == 1 else f)  # pink 1/f power, brown 1/f^2 power
        c = np.fft.irfft(spec, n).astype(np.float32)
        return c / (c.std() + 1e-9)

    def reverb(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import fftconvolve
        rt60 = self.rng.uniform(*self.rt60)
        n = int(min(rt60, 0.8) * SR)
        t = np.arange(n) / SR
        ir = self.rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        ir[0] = 1.0 / self.rng.uniform(0.3, 1.0)  # direct path vs reverberant energy
        y = fftconvolve(x, ir)[: len(x)]
        return (y * (np.std(x) + 1e-9) / (np.std(y) + 1e-9)).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.p_speed and self.rng.random() < self.p_speed:
            x = self.perturb_speed(x)
        if self.p_band and self.rng.random() < self.p_band:
            x = self.band_limit(x)
        if self.rng.random() < self.p_reverb:
            x = self.reverb(x)
        if self.rng.random() < self.p_noise:
            snr = self.rng.uniform(*self.snr_db)
            sig = np.sqrt(np.mean(x ** 2) + 1e-12)
            x = x + self.noise(len(x)) * (sig / (10 ** (snr / 20)))
        return x.astype(np.float32)


# ---------------------------------------------------------------- model

def model_config(args=None, **overrides):
    """The recipe's wav2vec2 architecture (<10 M parameters, group-norm feature encoder, so the
    exported model takes no attention mask)."""
    from transformers import Wav2Vec2Config
    g = (lambda k, d: getattr(args, k, d)) if args is not None else (lambda k, d: d)
    conv = int(g("conv_channels", 128))
    hidden = int(g("hidden", 256))
    kw = dict(
        conv_dim=(conv,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False,
        feat_extract_norm=str(g("conv_norm", "group")),
        feat_extract_activation="gelu",
        # pre-layer-norm Transformer (transformers' "stable layer norm", as in wav2vec2-large):
        # the post-LN layout of wav2vec2-base does not leave the CTC blank plateau within this
        # budget when trained from scratch (see README); --post-ln restores it.
        do_stable_layer_norm=not bool(g("post_ln", False)),
        hidden_size=hidden,
        num_hidden_layers=int(g("layers", 6)),
        num_attention_heads=int(g("heads", 4)),
        intermediate_size=int(g("ffn", 1024)),
        hidden_act="gelu",
        num_conv_pos_embeddings=int(g("pos_conv_kernel", 64)),
        num_conv_pos_embedding_groups=16,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.1,
        final_dropout=0.0,
        layerdrop=0.05,
        # quantizer (pre-training only): G groups x V entries
        num_codevector_groups=int(g("groups", 2)),
        num_codevectors_per_group=int(g("entries", 160)),
        codevector_dim=int(g("codevector_dim", 128)),
        proj_codevector_dim=int(g("proj_dim", 128)),
        num_negatives=int(g("negatives", 50)),
        contrastive_logits_temperature=0.1,
        diversity_loss_weight=0.1,
        feat_quantizer_dropout=0.0,
        # CTC head
        vocab_size=len(VOCAB),
        pad_token_id=PAD_ID,
        bos_token_id=1,
        eos_token_id=2,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
    )
    kw.update(overrides)
    return Wav2Vec2Config(**kw)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_hf_ctc(model, folder: Path):
    """A complete Hugging Face Wav2Vec2ForCTC folder with base-960h's vocabulary and side files."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.architectures = ["Wav2Vec2ForCTC"]
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "vocab.json").write_text(json.dumps(TOKEN_ID, indent=2) + "\n")
    pre = {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor",
           "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
           "processor_class": "Wav2Vec2Processor", "return_attention_mask": False,
           "sampling_rate": SR}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    tok = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
           "word_delimiter_token": "|", "do_lower_case": False, "replace_word_delimiter_char": " ",
           "tokenizer_class": "Wav2Vec2CTCTokenizer", "processor_class": "Wav2Vec2Processor"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
        indent=2) + "\n")


@dataclass
class EvalResult:
    wer: float
    cer: float
    utterances: int
    words: int
    examples: list


def evaluate_ctc(model, rows: list[Utt], audio: list[np.ndarray], max_examples=5,
                 batch=16) -> tuple[EvalResult, list]:
    """Greedy-decode every utterance as the engine does: alone, normalized, no padding, no mask.
    Clips of exactly equal length are batched (identical results, fewer calls).
    Returns the summary and (reference, hypothesis) pairs in row order."""
    import torch
    from collections import defaultdict
    model.eval()
    hyps = [""] * len(rows)
    by_len = defaultdict(list)
    for i, a in enumerate(audio):
        by_len[len(pad_min(a))].append(i)
    with torch.inference_mode():
        for n, idx in sorted(by_len.items()):
            for k in range(0, len(idx), batch):
                part = idx[k:k + batch]
                x = torch.from_numpy(np.stack([zero_mean_unit_var(pad_min(audio[i])) for i in part]))
                ids = model(x).logits.argmax(-1)
                for i, row in zip(part, ids):
                    hyps[i] = ctc_greedy_decode(row.tolist())
    pairs = [(u.text, h) for u, h in zip(rows, hyps)]
    r = error_rates(pairs)
    return (EvalResult(r["wer"], r["cer"], len(rows), r["words"],
                       [{"ref": a, "hyp": b} for a, b in pairs[:max_examples]]), pairs)


MIN_SAMPLES = 400 + 400  # a receptive field and a bit: the conv stack needs >= 400 samples


def pad_min(x: np.ndarray, n: int = MIN_SAMPLES) -> np.ndarray:
    if len(x) >= n:
        return x
    p = n - len(x)
    return np.pad(x, (p // 2, p - p // 2))


# ---------------------------------------------------------------- schedules, budgets, checkpoints

def tri_stage_lr(progress: float, peak: float, warmup=0.1, hold=0.4, decay=0.5,
                 init_scale=0.01, final_scale=0.05) -> float:
    """fairseq's tri-stage schedule (wav2vec 2.0 fine-tuning): linear warm-up from
    init_scale*peak, hold at peak, exponential decay to final_scale*peak."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return peak * (init_scale + (1 - init_scale) * p / warmup)
    if p < warmup + hold:
        return peak
    d = min((p - warmup - hold) / max(decay, 1e-9), 1.0)
    return peak * math.exp(math.log(final_scale) * d)


def warmup_linear_lr(progress: float, peak: float, warmup=0.08) -> float:
    """Pre-training schedule of the paper: linear warm-up (8 %), then linear decay to zero."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return peak * p / warmup
    return peak * max(0.0, (1 - p) / (1 - warmup))


class Budget:
    """Stage progress in [0, 1]: by optimizer steps when `steps` is given (exactly repeatable),
    otherwise by wall-clock seconds spent in this stage (including earlier, resumed runs)."""

    def __init__(self, seconds: float, steps: int | None, spent: float = 0.0, step: int = 0):
        self.seconds, self.steps = seconds, steps
        self.spent0, self.t0, self.step = spent, time.monotonic(), step

    @property
    def spent(self) -> float:
        return self.spent0 + time.monotonic() - self.t0

    @property
    def progress(self) -> float:
        if self.steps:
            return self.step / self.steps
        return self.spent / max(self.seconds, 1e-9)

    def done(self) -> bool:
        return self.progress >= 1.0


def rng_state():
    import torch
    return {"py": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(s):
    import torch
    random.setstate(s["py"])
    np.random.set_state(s["np"])
    torch.set_rng_state(s["torch"])


def atomic_torch_save(obj, path: Path):
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path):
    return json.loads(path.read_text())


def data_rows(work: Path, split: str, smoke: bool) -> list[Utt]:
    """Rows of a split: the committed manifest (full run) or work/<smoke>/manifest subset."""
    base = (work / "manifest") if smoke else MANIFEST
    f = base / f"{split}.tsv"
    if not f.exists():
        sys.exit(f"error: {f} is missing; run prepare_data.py first")
    return read_tsv(f)
