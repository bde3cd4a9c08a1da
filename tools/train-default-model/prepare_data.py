#!/usr/bin/env python3
"""Write the data manifest: speaker-disjoint train/dev/test splits of ../shared/data.

Outputs (deterministic; committed so that a change in the data shows up in `git diff`):
  manifest/{train,dev,test}.tsv   path<TAB>transcript<TAB>speaker<TAB>source (paths relative to
                                  the TSV, readable by `w2v eval --data`)
  manifest/files.tsv              every file with split, speaker, seconds, sample rate, sha256
  manifest/summary.json           speakers and utterances per split and source

Splitting rule (by whole speaker, never by utterance):
  fsdd             speaker = the name in `{digit}_{speaker}_{index}.wav`; the five speakers are
                   ranked by sha256(SALT + name): first -> test, second -> dev, the rest -> train.
  speech_commands  speaker = the hash before `_nohash_`; u = sha256(SALT + hash) as a fraction in
                   [0, 1): u < 0.15 -> test, u < 0.30 -> dev, else train. (The words' digit and
                   command clips share speakers, so one speaker never straddles splits.)
  sentences        9 clips of other corpora and speakers -> train only (too few to evaluate).
  negatives.tsv    (other words and background noise, for rejection) -> manifest/negatives-*.tsv:
                   a word clip goes where its speaker goes (the rule above; all its speakers also
                   speak in transcripts.tsv); a noise clip has no speaker: the noise clips ranked by
                   sha256(SALT + "noise:" + file name) go a third each to test, dev and train, so
                   that dev and test each hold about 100.
With --smoke, also writes a small speaker-disjoint subset to WORK/manifest/.
"""
import argparse
import hashlib
import json
import random
import sys
import wave
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_DATA, DEFAULT_WORK, MANIFEST, Utt, log, normalize_text,  # noqa: E402
                    sha256_file, text_to_ids, write_tsv)

SALT = "w2v-default-model-split-v1:"
SC_TEST, SC_DEV = 0.15, 0.30


def speaker_of(rel: str, source: str) -> str:
    name = Path(rel).name
    if rel.startswith("fsdd/"):
        return "fsdd:" + name.split("_")[1]
    if rel.startswith("speech_commands/"):
        return "sc:" + name.split("_nohash_")[0]
    if source == "librispeech":
        return "librispeech:" + name.split("-")[0]
    return source  # pocketsphinx cards, librivox austen, speech_recognition example


def frac(s: str) -> float:
    return int(hashlib.sha256((SALT + s).encode()).hexdigest()[:12], 16) / float(16 ** 12)


def assign_splits(rows):
    fsdd_speakers = sorted({r["speaker"] for r in rows if r["speaker"].startswith("fsdd:")},
                           key=lambda s: hashlib.sha256((SALT + s).encode()).hexdigest())
    fsdd_split = {s: ("test" if i == 0 else "dev" if i == 1 else "train")
                  for i, s in enumerate(fsdd_speakers)}
    for r in rows:
        s = r["speaker"]
        if s.startswith("fsdd:"):
            r["split"] = fsdd_split[s]
        elif s.startswith("sc:"):
            u = frac(s)
            r["split"] = "test" if u < SC_TEST else "dev" if u < SC_DEV else "train"
        else:
            r["split"] = "train"


def read_negatives(data: Path) -> list[dict]:
    """negatives.tsv: word clips (transcript = the word) and noise clips (empty transcript)."""
    tsv = data / "negatives.tsv"
    if not tsv.exists():
        sys.exit(f"error: {tsv} not found")
    out = []
    for line in tsv.read_text().splitlines()[1:]:
        if not line.strip():
            continue
        rel, text, sr, source = line.split("\t")[:4]
        text = normalize_text(text)
        text_to_ids(text)
        # `_unknown_/<word>_<speaker>_nohash_<n>.wav`: the word goes before the speaker hash
        speaker = "sc:" + Path(rel).name.split("_nohash_")[0].split("_")[-1] if text else "noise"
        out.append(dict(path=data / rel, rel=rel, text=text, sr=int(sr), source=source, speaker=speaker))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (transcripts.tsv)")
    ap.add_argument("--out", type=Path, default=MANIFEST)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--smoke", action="store_true", help="also write a tiny subset to WORK/manifest")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    data = args.data.resolve()
    tsv = data / "transcripts.tsv"
    if not tsv.exists():
        sys.exit(f"error: {tsv} not found (pass --data)")
    lines = tsv.read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:4] == ["path", "transcript", "sample_rate", "source"], header
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        rel, text, sr, source = line.split("\t")[:4]
        p = data / rel
        with wave.open(str(p)) as w:
            seconds = w.getnframes() / w.getframerate()
            if w.getframerate() != int(sr):
                sys.exit(f"error: {rel}: sample rate {w.getframerate()} != {sr} in transcripts.tsv")
        text = normalize_text(text)
        text_to_ids(text)  # every character must be in the base-960h vocabulary
        rows.append(dict(path=p, rel=rel, text=text, sr=int(sr), source=source,
                         speaker=speaker_of(rel, source), seconds=seconds))
    assign_splits(rows)
    negatives = read_negatives(data)
    split_of_speaker = {r["speaker"]: r["split"] for r in rows}
    for r in negatives:
        if r["text"]:
            if r["speaker"] not in split_of_speaker:
                sys.exit(f"error: {r['rel']}: speaker {r['speaker']} is not in transcripts.tsv")
            r["split"] = split_of_speaker[r["speaker"]]
    noise = sorted((r for r in negatives if not r["text"]), key=lambda r: frac("noise:" + Path(r["rel"]).name))
    for i, r in enumerate(noise):
        r["split"] = "test" if 3 * i < len(noise) else "dev" if 3 * i < 2 * len(noise) else "train"

    # Speaker-disjointness check across splits.
    spk_splits = defaultdict(set)
    for r in rows:
        spk_splits[r["speaker"]].add(r["split"])
    bad = [s for s, v in spk_splits.items() if len(v) > 1]
    assert not bad, f"speakers in more than one split: {bad}"

    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        sel = [Utt(r["path"], r["text"], r["speaker"], r["source"]) for r in rows if r["split"] == split]
        write_tsv(args.out / f"{split}.tsv", sel)
    for split in ("train", "dev", "test"):
        sel = [Utt(r["path"], r["text"], r["speaker"], r["source"]) for r in negatives if r["split"] == split]
        write_tsv(args.out / f"negatives-{split}.tsv", sel)
        log(f"negatives {split:5s}: {sum(1 for u in sel if u.text)} word clips, "
            f"{sum(1 for u in sel if not u.text)} noise clips")
    with open(args.out / "files.tsv", "w") as f:
        f.write("path\ttranscript\tsplit\tspeaker\tsource\tsample_rate\tseconds\tsha256\n")
        for r in rows:
            f.write(f"{r['rel']}\t{r['text']}\t{r['split']}\t{r['speaker']}\t{r['source']}\t"
                    f"{r['sr']}\t{r['seconds']:.4f}\t{sha256_file(r['path'])}\n")

    summary = {"salt": SALT, "data": "../shared/data (paths in files.tsv are relative to it)", "splits": {}}
    for split in ("train", "dev", "test"):
        sel = [r for r in rows if r["split"] == split]
        by_corpus = Counter(r["rel"].split("/")[0] for r in sel)
        spk = defaultdict(set)
        for r in sel:
            spk[r["rel"].split("/")[0]].add(r["speaker"])
        summary["splits"][split] = {
            "utterances": len(sel),
            "seconds": round(sum(r["seconds"] for r in sel), 1),
            "utterances_by_folder": dict(sorted(by_corpus.items())),
            "speakers_by_folder": {k: len(v) for k, v in sorted(spk.items())},
            "fsdd_speakers": sorted(s[5:] for s in spk.get("fsdd", ())),
        }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for split, s in summary["splits"].items():
        log(f"{split:5s}: {s['utterances']:5d} utterances, {s['seconds']:7.1f} s, speakers "
            f"{s['speakers_by_folder']}, fsdd {s['fsdd_speakers']}")

    if args.smoke:
        # Tiny, still speaker-disjoint subset: per split a seeded sample of fsdd + speech_commands.
        rng = random.Random(args.seed)
        sizes = {"train": 64, "dev": 16, "test": 16}
        for split, n in sizes.items():
            sel = [r for r in rows if r["split"] == split and r["source"] != "librispeech"
                   and r["seconds"] < 3]
            fs = [r for r in sel if r["rel"].startswith("fsdd/")]
            sc = [r for r in sel if r["rel"].startswith("speech_commands/")]
            pick = rng.sample(fs, n // 2) + rng.sample(sc, n - n // 2)
            write_tsv(args.work / "manifest" / f"{split}.tsv",
                      [Utt(r["path"], r["text"], r["speaker"], r["source"]) for r in pick])
        log(f"smoke subset -> {args.work / 'manifest'} ({sizes})")


if __name__ == "__main__":
    main()
