#!/usr/bin/env python3
"""Synthesize the *unseen-word* clips of the voice-command streams (issue #27).

../shared/data/negatives.tsv holds only 124 real clips of words that are neither commands nor
digits (90 of them on the training side, which the shipped model trained on as negatives), so the
dev and test streams could not reach 100 unseen words each from real speech. This script adds
espeak-ng clips of everyday English words that the default model never trained on (no command
word, digit, homophone of one, or Speech Commands "unknown" word), with disjoint word lists *and*
disjoint voices for dev and test, so that tuning on dev cannot learn the test words or voices.
The real unseen-word clips of each split are used beside them and reported separately.

Deterministic for a given espeak-ng build (seeded levels, rates and pitches). Writes
tests/data/unseen-words/{dev,test}/NNN_word_voice.wav (16 kHz mono 16-bit PCM, trimmed to the
speech plus 50 ms) and tests/data/unseen-words/{dev,test}.tsv (path, transcript, speaker, source:
the manifest columns). Committed, so tests need neither espeak-ng nor Python.

    python3 tools/listen/synth_unseen.py        # needs espeak-ng, numpy, scipy
"""
import io
import subprocess
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SR = 16000
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "unseen-words"

DEV_WORDS = """
apple basket candle doctor engine garden hammer island jacket kitchen ladder monkey needle
orange pencil pocket rabbit salad ticket umbrella valley window yellow zebra bottle cookie
dinner finger guitar honey letter market number paper river silver summer table tiger turtle
wagon winter answer bubble butter circle dragon forest hungry lemon magic planet puzzle rocket
shadow sugar thunder travel
""".split()

TEST_WORDS = """
anchor blanket button carpet castle chicken cotton desert feather flower giant helmet jungle
kettle lantern lizard marble mirror muffin napkin ocean parrot pepper pillow pirate pumpkin
rainbow saddle scissors spider spoon sweater teacher tomato tunnel violin walnut whistle wizard
bucket camera cherry coffee dolphin fabric hollow kitten mango meadow nickel olive pebble
pretzel robot socket velvet
""".split()

# Voices (espeak-ng accent + variant), disjoint between dev and test.
DEV_VOICES = ["en-us+m3", "en-gb-scotland+f2", "en-gb-x-rp+m7", "en-029+f4"]
TEST_VOICES = ["en-gb+m1", "en-us-nyc+f3", "en-gb-x-gbclan+m5", "en-us+f5"]

FORBIDDEN = set("""yes no up down left right on off stop go zero one two three four five six
seven eight nine know too to for fore won ate write of backward bed bird cat dog follow forward
happy house learn marvin sheila tree visual wow""".split())


def espeak(text, voice, speed, pitch):
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        sr = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    g = np.gcd(sr, SR)
    return resample_poly(x, SR // g, sr // g).astype(np.float32)


def trim(x, pad=0.05):
    frame = SR // 100
    n = len(x) // frame
    db = 10 * np.log10((x[: n * frame].reshape(n, frame) ** 2).mean(1) + 1e-12)
    on = np.nonzero(db > db.max() - 40)[0]
    a = max(0, on[0] * frame - int(pad * SR))
    b = min(len(x), (on[-1] + 1) * frame + int(pad * SR))
    return x[a:b]


def write_wav(path, x):
    pcm = (np.clip(x, -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def main():
    for split, words, voices, seed in (("dev", DEV_WORDS, DEV_VOICES, 27001),
                                       ("test", TEST_WORDS, TEST_VOICES, 27002)):
        assert not FORBIDDEN & set(words), FORBIDDEN & set(words)
        rng = np.random.default_rng(seed)
        folder = OUT / split
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.wav"):
            old.unlink()
        rows = ["path\ttranscript\tspeaker\tsource"]
        k = 0
        for i, word in enumerate(words):
            # Two voices per word, rotating, so each voice says half the words.
            for voice in (voices[i % len(voices)], voices[(i + 1 + i // len(voices)) % len(voices)]):
                speed, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
                x = trim(espeak(word, voice, speed, pitch))
                x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.15, 0.8)
                name = f"{k:03d}_{word}_{voice.replace('+', '-')}.wav"
                write_wav(folder / name, x)
                rows.append(f"{split}/{name}\t{word}\tespeak:{voice}\tespeak-ng:s{speed}:p{pitch}")
                k += 1
        (OUT / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        print(f"{split}: {k} clips of {len(words)} words in {len(voices)} voices")


if __name__ == "__main__":
    main()
