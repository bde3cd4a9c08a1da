#!/usr/bin/env python3
"""Expected top transcripts of pyctcdecode on its own LibriSpeech logits, for
engine/tests/pyctcdecode_parity.rs (w2v decode's --pyctcdecode mode must print the same).

Never needed by the build or CI; rerun by hand:

    python3 -m venv /tmp/lmvenv && /tmp/lmvenv/bin/pip install pyctcdecode==0.5.0 numpy kenlm
    NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL" \
        /tmp/lmvenv/bin/python tools/lm/gen_pyctcdecode_expected.py PYCTCDECODE_CHECKOUT

(numpy's AVX-512 exp and log for float64 round differently from the C library's in the last bit,
and pyctcdecode's beams tie exactly often enough on these flattened logits for one bit to reorder
them: with those kernels off, numpy computes what it computes on any CPU without AVX-512, and
what w2v computes everywhere.) `text` is `decode` (which prunes the history), `nbest` is
`decode_beams` (which does not).

PYCTCDECODE_CHECKOUT is a checkout of kensho-technologies/pyctcdecode (for
pyctcdecode/tests/sample_data/libri_logits.json). Writes engine/tests/data/lm/libri_logits.npy
(float32 log-probabilities, [frames, 29]) and engine/tests/data/lm/pyctcdecode_expected.json.
Without the kenlm module the LM cases are skipped (and say so in the JSON).
"""

import json
import os
import sys

import numpy as np
from pyctcdecode import Alphabet, BeamSearchDecoderCTC
from pyctcdecode.language_model import LanguageModel, load_unigram_set_from_arpa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "engine", "tests", "data", "lm")
LABELS = [" "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'", ""]


def main() -> None:
    src = os.path.join(sys.argv[1], "pyctcdecode", "tests", "sample_data", "libri_logits.json")
    with open(src) as f:
        logits = np.array(json.load(f), dtype=np.float32)
    assert logits.shape[1] == len(LABELS), logits.shape
    # Our decoder reads float32; give pyctcdecode the very same numbers (as float64).
    np.save(os.path.join(DATA, "libri_logits.npy"), logits)
    x = logits.astype(np.float64)
    alphabet = Alphabet.build_alphabet(LABELS)
    hot = ["remember", "mind upon", "achieve"]
    cases = []

    def add(name, decoder, **kw):
        # Flattened copies (logits times a float32 factor) make the search ambiguous enough to
        # tell decoders apart; the clean logits alone decode the same in every setting.
        for scale in [1.0, 0.5, 0.3]:
            xs = (logits * np.float32(scale)).astype(np.float32).astype(np.float64)
            text = decoder.decode(xs, **kw)
            beams = decoder.decode_beams(xs, **kw)
            cases.append(
                {
                    "name": name,
                    "scale": scale,
                    "settings": {k: v for k, v in kw.items()},
                    "text": text,
                    "nbest": [b[0] for b in beams[:5]],
                }
            )

    plain = BeamSearchDecoderCTC(alphabet)
    add("no lm", plain)
    add("beam 1", plain, beam_width=1)
    add("beam 5", plain, beam_width=5)
    add("token_min_logp -10", plain, token_min_logp=-10.0)
    add("beam_prune_logp -3", plain, beam_prune_logp=-3.0)
    add("hotwords", plain, hotwords=hot, hotword_weight=10.0)
    add("hotwords weight 3", plain, hotwords=hot, hotword_weight=3.0)
    kenlm_ok = True
    try:
        import kenlm  # noqa: F401
    except ImportError:
        kenlm_ok = False
    if kenlm_ok:
        import kenlm

        for arpa in ["kenlm_test.arpa", "bugs_bunny_kenlm.arpa"]:
            model = kenlm.Model(os.path.join(DATA, arpa))
            unigrams = sorted(load_unigram_set_from_arpa(os.path.join(DATA, arpa)))
            for alpha, beta in [(0.5, 1.5), (1.0, 0.0), (0.0, 0.0)]:
                lm = LanguageModel(model, unigrams, alpha=alpha, beta=beta)
                dec = BeamSearchDecoderCTC(alphabet, lm)
                add(f"{arpa} alpha {alpha} beta {beta}", dec)
            lm = LanguageModel(model, unigrams, alpha=0.5, beta=1.5, unk_score_offset=-3.0)
            dec = BeamSearchDecoderCTC(alphabet, lm)
            add(f"{arpa} unk -3", dec)
            add(f"{arpa} unk -3 hotwords", dec, hotwords=hot, hotword_weight=10.0)
    out = {
        "source": "pyctcdecode 0.5.0 on pyctcdecode/tests/sample_data/libri_logits.json",
        "labels": LABELS,
        "kenlm": kenlm_ok,
        "hotwords": hot,
        "cases": cases,
    }
    with open(os.path.join(DATA, "pyctcdecode_expected.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    for c in cases:
        print(c["name"], c["scale"], "->", c["text"])


if __name__ == "__main__":
    main()
