#!/usr/bin/env python3
"""The model card's results matrix, measured with the w2v binary: WER and CER of the shipped
models (fp32 and int8) on both backends (tract and ONNX Runtime), on the held-back test speakers'
digits, command words and concatenated phrases.

  eval_matrix.py --w2v target/release/w2v --models models/default.onnx models/default.int8.onnx \
      --test tools/train-default-model/manifest/test.tsv --phrases WORK/synth/phrases/test.tsv \
      --out WORK/final/eval-matrix

writes OUT.json (every `w2v eval --json` result) and OUT.md (the table). With `--words
models/default.words.txt` every cell is also measured with decoding constrained to those words
(`w2v eval --words`), as a second row per model and backend; with `--lm models/default.lm.arpa`
with beam search and that LM, and (with both) beam search spelling only the listed words with
the LM. `--noise TSV` adds a column: of its clips with an empty transcript (background noise), the
share each decoding leaves empty. ONNX Runtime needs its library (tools/fetch-ort.sh,
or ORT_DYLIB_PATH).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def split_test(test: Path, tmp: Path):
    """test.tsv -> (digits.tsv, commands.tsv) with paths made absolute."""
    lines = test.read_text().splitlines()
    out = {"digits": [lines[0]], "command words": [lines[0]]}
    for line in lines[1:]:
        cols = line.split("\t")
        cols[0] = str((test.parent / cols[0]).resolve())
        out["digits" if cols[1] in DIGITS else "command words"].append("\t".join(cols))
    paths = {}
    for name, rows in out.items():
        p = tmp / f"{name.replace(' ', '-')}.tsv"
        p.write_text("\n".join(rows) + "\n")
        paths[name] = p
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--w2v", type=Path, required=True)
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--phrases", type=Path)
    ap.add_argument("--backends", nargs="+", default=["tract", "ort"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--words", type=Path, help="also evaluate with decoding constrained to these words")
    ap.add_argument("--lm", type=Path, help="also evaluate beam search with this ARPA LM")
    ap.add_argument("--lm-args", default="", help="more decoder flags with --lm, e.g. "
                    "\"--lm-weight 0.25 --word-score -1\" (tuned on dev with `w2v eval --tune`)")
    ap.add_argument("--noise", type=Path, help="TSV of noise clips (empty transcripts)")
    args = ap.parse_args()
    decodings = (["greedy"] + (["words"] if args.words else []) + (["lm"] if args.lm else [])
                 + (["words+lm"] if args.words and args.lm else []))

    def flags(dec):
        out = []
        if "words" in dec:
            out += ["--words", str(args.words)]
        if "lm" in dec:
            out += ["--lm", str(args.lm), *args.lm_args.split()]
        return out
    with tempfile.TemporaryDirectory() as tmp:
        sets = split_test(args.test, Path(tmp))
        if args.phrases:
            sets["phrases"] = args.phrases
        results = []
        for model in args.models:
            for backend in args.backends:
              for dec in decodings:
                for name, tsv in sets.items():
                    cmd = [str(args.w2v), "eval", "--model", str(model), "--data", str(tsv),
                           "--backend", backend, "--json", *flags(dec)]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        sys.exit(f"eval_matrix: {' '.join(cmd)} failed:\n{r.stderr}")
                    j = json.loads(r.stdout)
                    results.append(dict(model=model.name, backend=backend, decoding=dec, set=name, wer=j["wer"], cer=j["cer"],
                                        utterances=j["utterances"], failed=j["failed"],
                                        real_time_factor=j["real_time_factor"]))
                    print(f"{model.name:22s} {backend:6s} {dec:8s} {name:14s} WER {100 * j['wer']:6.2f} %  "
                          f"CER {100 * j['cer']:6.2f} %  ({j['utterances']} utts, RTF {j['real_time_factor']:.4f})",
                          flush=True)
                if args.noise:
                    rows_n = [line.split("\t") for line in args.noise.read_text().splitlines()[1:]]
                    clips = [str((args.noise.parent / r[0]).resolve()) for r in rows_n
                             if r[0] and len(r) > 1 and not r[1].strip()]
                    cmd = [str(args.w2v), "transcribe", "--model", str(model), "--backend", backend,
                           "--format", "json", *flags(dec), *clips]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        sys.exit(f"eval_matrix: w2v transcribe of the noise clips failed:\n{r.stderr[-2000:]}")
                    texts = [json.loads(line)["text"] for line in r.stdout.splitlines() if line.strip()]
                    empty = sum(1 for t in texts if not t.strip())
                    results.append(dict(model=model.name, backend=backend, decoding=dec, set="noise",
                                        clips=len(texts), empty=empty, empty_rate=empty / max(len(texts), 1)))
                    print(f"{model.name:22s} {backend:6s} {dec:8s} noise          empty {empty}/{len(texts)}",
                          flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    names = list(dict.fromkeys(r["set"] for r in results if r["set"] != "noise"))
    noise = " | noise left empty" if args.noise else ""
    head = ("| model | backend | decoding | " + " | ".join(f"{n} WER (CER)" for n in names)
            + noise + " | real-time factor |")
    lines = [head, "|---|---|---|" + "---:|" * (len(names) + 1 + bool(args.noise))]
    for model in args.models:
        for backend in args.backends:
            for dec in decodings:
                rows = {r["set"]: r for r in results
                        if r["model"] == model.name and r["backend"] == backend and r["decoding"] == dec}
                cells = [f"{100 * rows[n]['wer']:.1f} % ({100 * rows[n]['cer']:.1f} %)" for n in names]
                if args.noise:
                    z = rows["noise"]
                    cells.append(f"{100 * z['empty_rate']:.1f} % ({z['empty']}/{z['clips']})")
                rtf = max(r["real_time_factor"] for n, r in rows.items() if n != "noise")
                label = {"greedy": "greedy", "words": f"`--words {args.words and args.words.name}`",
                         "lm": f"`--lm {args.lm and args.lm.name}`",
                         "words+lm": "`--words` + `--lm`"}[dec]
                lines.append(f"| `{model.name}` | {backend} | {label} | " + " | ".join(cells) + f" | {rtf:.3f} |")
    counts = {n: next(r["utterances"] for r in results if r["set"] == n) for n in names}
    if args.noise:
        counts["noise"] = next(r["clips"] for r in results if r["set"] == "noise")
    lines.append("")
    lines.append("Utterances: " + ", ".join(f"{n} {c}" for n, c in counts.items()) + ".")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
