#!/usr/bin/env python3
"""Synthetic and derived training speech for the command/digit domain.

1. espeak-ng speech (WORK/synth/): digits, command words, digit strings and short command phrases
   ("turn on", "go left three", "seven four two") in many voices (8 English accents x ~35 voice
   variants), speeds (110-210 wpm), pitches (15-85) and word gaps. Stored clean at 16 kHz; noise
   and reverberation are added on the fly during training (common.Augmenter), so every epoch
   hears a different room and noise.
2. Phrases concatenated from real word clips with short silences (WORK/phrases/): digit strings
   from one FSDD speaker, command phrases from Speech Commands speakers. Train phrases use train
   speakers only; dev/test phrases (for evaluation) are built from the dev/test speakers only.
3. With --n-engines N (WORK/synth/engines/): the same kind of text from other synthesizers than
   espeak-ng's formant voices, closer to natural speech: flite (kal, kal16, awb, rms, slt) and
   festival (kal and ked diphones, the slt HTS voice), at duration stretches 0.8-1.3; and digit
   strings joined from the ten real digit recordings of Asterisk's "Allison" prompts (one more real
   8 kHz speaker). Every clip is resampled by a factor 0.88-1.12 (pitch and tempo together).
   Debian packages: flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
   asterisk-core-sounds-en-wav.

Every item draws from its own seeded RNG, so the output does not depend on the thread count.
Re-running with the same arguments reuses the existing output (stamp.json).
"""
import argparse
import io
import shutil
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (COMMANDS, DEFAULT_WORK, DIGITS, DIRECTIONS, SR, Utt, data_rows, load_audio,  # noqa: E402
                    log, read_json, resample, save_wav, trim_silence, write_json, write_tsv)

ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc"]
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Alicia", "Annie", "aunty", "belinda",
            "benjamin", "david", "ed", "edward", "grandma", "grandpa", "linda", "max", "michel",
            "paul", "rob", "robert", "steph", "travis", "victor", "zac", "shelby", "norbert"]


def phrase(rng: np.random.Generator, words_ok=None) -> str:
    """A domain utterance. With `words_ok` (real clips to concatenate), only phrases of those
    words (no "turn"/"move"), falling back to two random available words."""
    def pick(xs):
        return xs[rng.integers(len(xs))]

    def digits(n):
        return " ".join(pick(DIGITS) for _ in range(n))

    templates = [
        lambda: "go " + pick(DIRECTIONS),
        lambda: pick(DIRECTIONS) + " " + pick(DIGITS),
        lambda: "go " + pick(DIRECTIONS) + " " + pick(DIGITS),
        lambda: pick(["yes", "no"]) + " " + pick(["stop", "go"]),
        lambda: pick(["stop", "go"]) + " " + pick(["stop", "go", "on", "off"]),
        lambda: pick(["on", "off"]) + " " + digits(1),
        lambda: pick(COMMANDS) + " " + digits(int(rng.integers(1, 3))),
    ]
    if words_ok is None:
        templates += [lambda: "turn " + pick(["on", "off", "left", "right"]),
                      lambda: "move " + pick(DIRECTIONS)]

    def one():
        r = rng.random()
        if r < 0.25:
            return pick(DIGITS)
        if r < 0.45:
            return pick(COMMANDS)
        if r < 0.65:
            return digits(int(rng.integers(2, 5)))
        return pick(templates)()

    if words_ok is None:
        return one()
    for _ in range(50):
        t = one()
        if all(w in words_ok for w in t.split()):
            return t
    ok = sorted(words_ok)
    return pick(ok) + " " + pick(ok)


def espeak(text, voice, speed, pitch, gap) -> np.ndarray:
    import soundfile as sf
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "-g", str(gap), "--stdout", text],
                         check=True, capture_output=True).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float32")
    return resample(x, sr)


def pad_silence(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """50-350 ms of silence before and after a trimmed synthetic utterance."""
    lead, tail = (int(rng.uniform(0.05, 0.35) * SR) for _ in range(2))
    return np.concatenate([np.zeros(lead, np.float32), x, np.zeros(tail, np.float32)])


def synth_one(i, seed, folder: Path):
    rng = np.random.default_rng([seed, 1, i])
    text = phrase(rng)
    acc = ACCENTS[rng.integers(len(ACCENTS))]
    var = VARIANTS[rng.integers(len(VARIANTS))]
    voice = acc + ("+" + var if var else "")
    speed, pitch, gap = int(rng.integers(110, 211)), int(rng.integers(15, 86)), int(rng.integers(0, 13))
    try:
        x = espeak(text, voice, speed, pitch, gap)
    except subprocess.CalledProcessError:
        voice = acc
        x = espeak(text, voice, speed, pitch, gap)
    x = trim_silence(x, pad=0)
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.1, 0.9)
    path = folder / "wav" / f"{i:05d}.wav"
    save_wav(path, pad_silence(x, rng))
    return Utt(path, text, f"espeak:{voice}:s{speed}:p{pitch}", "espeak-ng")


def join_words(clips, rng: np.random.Generator) -> np.ndarray:
    """Word clips, trimmed and peak-normalized, joined with 60-300 ms silences (50-300 ms before)."""
    parts = [np.zeros(int(rng.uniform(0.05, 0.3) * SR), np.float32)]
    for a in clips:
        a = trim_silence(a, pad=480)
        parts += [a / (np.abs(a).max() + 1e-9) * 0.5,
                  np.zeros(int(rng.uniform(0.06, 0.3) * SR), np.float32)]
    return np.concatenate(parts)


FLITE = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison/digits")


def engine_one(i, seed, folder: Path, allison):
    rng = np.random.default_rng([seed, 3, i])
    text = phrase(rng)
    stretch = float(rng.uniform(0.8, 1.3))
    tmp = folder / "tmp" / f"{i:05d}.wav"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    r = rng.random()
    if r < 0.15:
        text = " ".join(DIGITS[rng.integers(10)] for _ in range(int(rng.integers(1, 5))))
        x = join_words([allison[DIGITS.index(w)] for w in text.split()], rng)
        voice = "asterisk:allison"
    else:
        if r < 0.6:
            name = FLITE[rng.integers(len(FLITE))]
            subprocess.run(["flite", "-voice", name, "--setf", f"duration_stretch={stretch:.2f}",
                            "-t", text, "-o", str(tmp)], check=True, capture_output=True)
            voice = f"flite:{name}"
        else:
            name = FESTIVAL[rng.integers(len(FESTIVAL))]
            # festival evaluates each argument as one expression
            subprocess.run(["festival", "--batch", f"(voice_{name})",
                            f"(Parameter.set 'Duration_Stretch {stretch:.2f})",
                            f'(utt.save.wave (SynthText "{text}") "{tmp}" \'riff)'],
                           check=True, capture_output=True)
            voice = f"festival:{name}"
        x = pad_silence(trim_silence(load_audio(tmp), pad=0), rng)
        tmp.unlink()
    factor = float(rng.uniform(0.88, 1.12))  # played back 'factor' times faster, pitch with it
    x = resample(x, int(round(SR * factor / 100)) * 100)
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.1, 0.9)
    path = folder / "wav" / f"{i:05d}.wav"
    save_wav(path, x)
    return Utt(path, text, f"{voice}:x{stretch:.2f}:r{factor:.2f}", voice.split(":")[0])


def synth_engines(args):
    folder = args.work / "synth" / "engines"
    stamp = {"n_engines": args.n_engines, "seed": args.seed}
    if (folder / "stamp.json").exists() and read_json(folder / "stamp.json") == stamp:
        log("synth engines: up to date, reusing", folder)
        return
    missing = [t for t in ("flite", "festival") if shutil.which(t) is None]
    if missing or not ALLISON.is_dir():
        sys.exit(f"error: --n-engines needs {', '.join(missing) or ALLISON}: apt-get install flite "
                 "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts "
                 "asterisk-core-sounds-en-wav")
    allison = [load_audio(ALLISON / f"{d}.wav") for d in range(10)]
    with ThreadPoolExecutor(args.jobs) as ex:
        utts = list(ex.map(lambda i: engine_one(i, args.seed, folder, allison), range(args.n_engines)))
    write_tsv(folder / "synth.tsv", utts)
    by = defaultdict(int)
    for u in utts:
        by[u.speaker.split(":x")[0]] += 1
    log(f"engines: {len(utts)} utterances -> {folder / 'synth.tsv'}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    write_json(folder / "stamp.json", stamp)


def concat_phrases(rows, audio_of, n, seed, split, folder: Path):
    """Join real word clips of one speaker (or of several same-split speakers when one speaker
    lacks a word) with 60-300 ms silences."""
    by_spk_word = defaultdict(lambda: defaultdict(list))
    by_word = defaultdict(list)
    for u in rows:
        if len(u.text.split()) == 1:
            corpus = "fsdd" if u.speaker.startswith("fsdd:") else "sc"
            by_spk_word[u.speaker][u.text].append(u)
            by_word[(corpus, u.text)].append(u)
    fsdd_spk = sorted(s for s in by_spk_word if s.startswith("fsdd:"))
    sc_spk = sorted(s for s in by_spk_word if s.startswith("sc:"))
    sc_words = {w for (c, w) in by_word if c == "sc"}
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i, ("train", "dev", "test").index(split)])
        use_fsdd = fsdd_spk and (rng.random() < 0.4 or not sc_spk)
        if use_fsdd:
            spk = fsdd_spk[rng.integers(len(fsdd_spk))]
            have = sorted(by_spk_word[spk])
            text = " ".join(have[rng.integers(len(have))] for _ in range(int(rng.integers(2, 5))))
            clips = [by_spk_word[spk][w][rng.integers(len(by_spk_word[spk][w]))] for w in text.split()]
        else:
            text = phrase(rng, words_ok=sc_words)
            while len(text.split()) < 2:
                text = phrase(rng, words_ok=sc_words)
            words = text.split()
            full = [s for s in sc_spk if all(w in by_spk_word[s] for w in words)]
            clips = []
            spk = full[rng.integers(len(full))] if full else None
            for w in words:
                pool = by_spk_word[spk][w] if spk else by_word[("sc", w)]
                clips.append(pool[rng.integers(len(pool))])
            spk = spk or "mixed-sc"
        path = folder / split / f"{i:05d}.wav"
        save_wav(path, join_words([audio_of(c) for c in clips], rng))
        out.append(Utt(path, text, spk, "concat:" + "+".join(c.source for c in clips)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--n-espeak", type=int, default=4000)
    ap.add_argument("--n-concat", type=int, default=1500, help="train phrases from real clips")
    ap.add_argument("--n-eval-phrases", type=int, default=200, help="dev and test phrases each")
    ap.add_argument("--n-engines", type=int, default=0,
                    help="utterances from flite, festival and Asterisk's digits (0: none)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if args.smoke:
        args.n_espeak, args.n_concat, args.n_eval_phrases, args.jobs = 24, 24, 8, 1

    if args.n_engines:
        synth_engines(args)
    stamp = {k: v for k, v in vars(args).items() if k not in ("work", "jobs", "n_engines")}
    stamp_file = args.work / "synth" / "stamp.json"
    if stamp_file.exists() and read_json(stamp_file) == stamp:
        log("synth: up to date, reusing", args.work / "synth")
        return

    # 1. espeak-ng
    folder = args.work / "synth" / "espeak"
    with ThreadPoolExecutor(args.jobs) as ex:
        utts = list(ex.map(lambda i: synth_one(i, args.seed, folder), range(args.n_espeak)))
    write_tsv(folder / "synth.tsv", utts)
    secs = sum(len(load_audio(u.path)) for u in utts[:200]) / SR / max(1, min(200, len(utts)))
    log(f"espeak-ng: {len(utts)} utterances (~{secs * len(utts) / 60:.0f} min) -> {folder / 'synth.tsv'}")

    # 2. concatenated real clips, per split, from that split's speakers only
    cache = {}

    def audio_of(u):
        if u.path not in cache:
            cache[u.path] = load_audio(u.path)
        return cache[u.path]

    folder = args.work / "synth" / "phrases"
    for split, n in (("train", args.n_concat), ("dev", args.n_eval_phrases), ("test", args.n_eval_phrases)):
        rows = data_rows(args.work, split, args.smoke)
        utts = concat_phrases(rows, audio_of, n, args.seed, split, folder)
        write_tsv(folder / f"{split}.tsv", utts)
        log(f"phrases/{split}: {len(utts)} from {len({u.speaker for u in rows})} {split} speakers")
    write_json(stamp_file, stamp)


if __name__ == "__main__":
    main()
