#!/usr/bin/env python3
"""The pre-training ablation: CTC training with and without the pre-trained encoder, at two label
budgets, with loss curves as PNG plots and the table as Markdown.

  ablation.py run  --work WORK --label-minutes 10 --minutes 15 [--threads 1]
                   [--pretrained PRE/hf] [--out DIR] [--bf16]
      trains one pair: finetune.py --init pretrained (from --pretrained, default WORK/pretrain/hf)
      and --init scratch (the same architecture, random weights) on a seeded subset of about
      --label-minutes of the labeled clips (100000: all of them), both with the same wall-clock
      budget, side by side (one process each, --threads each), into
      DIR/{finetune,scratch}/ (default WORK/ablation-<L>min). Side by side, any other load on
      the machine slows both arms alike.

  ablation.py report --work WORK --out DIR [--pair NAME=FOLDER ...] [--pretrain-log LOG]
      reads every pair's done.json and curve.tsv and writes DIR/ablation.md (the table) and
      DIR/ctc-loss.png (CTC loss against training minutes, one panel per pair). The pairs are
      the --pair folders, or else the recipe's own (WORK itself and WORK/ablation-*min).
      --pretrain-log: a `pretrain.py --objective bestrq` log, plotted as DIR/pretraining.png
      (loss against its chance level, the label entropy) and the table's rows name BEST-RQ;
      without it the contrastive lines of WORK/logs/run-*.log.
"""
import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(args):
    args.work = args.work.resolve()  # the same audio-cache keys as the recipe's (absolute) paths
    out = (args.out or args.work / f"ablation-{args.label_minutes:g}min").resolve()
    procs = []
    for init, stage in (("pretrained", "finetune"), ("scratch", "scratch")):
        cmd = [sys.executable, str(HERE / "finetune.py"), "--init", init, "--work", str(args.work),
               "--out", str(out / stage), "--label-minutes", str(args.label_minutes),
               "--minutes", str(args.minutes), "--threads", str(args.threads), "--seed", str(args.seed)]
        if args.pretrained is not None:
            cmd += ["--pretrained", str(args.pretrained.resolve())]
        if args.bf16:
            cmd.append("--bf16")
        (out / stage).mkdir(parents=True, exist_ok=True)
        log = open(out / f"{stage}.log", "a")
        print("ablation:", " ".join(cmd), flush=True)
        procs.append((stage, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
    bad = [stage for stage, p in procs if p.wait() != 0]
    if bad:
        sys.exit(f"ablation: {', '.join(bad)} failed; see {out}/<stage>.log")


def read_curve(path: Path):
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line]
    return [int(r[0]) for r in rows], [float(r[1]) / 60 for r in rows], [float(r[3]) for r in rows]


def smooth(v, k=25):
    out, acc = [], 0.0
    for i, x in enumerate(v):
        acc += x
        if i >= k:
            acc -= v[i - k]
        out.append(acc / min(i + 1, k))
    return out


def pretrain_curve(logs):
    """{update: (loss, chance, accuracy)} from pre-training log lines: the contrastive lines
    (chance ln 51) or the BEST-RQ ones (chance: the label entropy printed beside the loss)."""
    contrastive = re.compile(r"step (\d+) .* loss [\d.]+ \(contr ([\d.]+) .* acc ([\d.]+)")
    bestrq = re.compile(r"step (\d+) .* loss ([\d.]+) \(chance: label entropy ([\d.]+)\) acc ([\d.]+)")
    pts = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if m := bestrq.search(line):
                pts[int(m.group(1))] = (float(m.group(2)), float(m.group(3)), float(m.group(4)))
            elif m := contrastive.search(line):
                pts[int(m.group(1))] = (float(m.group(2)), 3.932, float(m.group(3)))
    return dict(sorted(pts.items()))


def report(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.pair:
        budgets = [(name, Path(folder)) for name, _, folder in (p.partition("=") for p in args.pair)]
    else:
        budgets = [("all labels", args.work)]
        for d in sorted(args.work.glob("ablation-*min")):
            budgets.append((d.name.removeprefix("ablation-").replace("min", " min of labels"), d))
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| labels | init | label audio | updates | minutes | final CTC | dev WER | test WER | test CER | test phrases WER |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4), squeeze=False)
    for ax, (name, base) in zip(axes[0], budgets):
        pre_label = ("BEST-RQ" if args.pretrain_log else "contrastive") + " pre-trained, frozen CNN"
        for stage, label in (("finetune", pre_label), ("scratch", "from scratch")):
            done = base / stage / "done.json"
            if not done.exists():
                continue
            d = json.loads(done.read_text())
            m = d["metrics"]
            pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
            lines.append(f"| {name} | {label} | {d['train_audio_minutes']:.1f} min | {d['steps']} | "
                         f"{d['minutes']:.1f} | {d['final_ctc']:.3f} | {pct(m['dev']['wer'])} | "
                         f"{pct(m['test']['wer'])} | {pct(m['test']['cer'])} | {pct(m['test_phrases']['wer'])} |")
            curve = base / stage / "curve.tsv"
            if curve.exists():
                _, minutes, ctc = read_curve(curve)
                ax.plot(minutes, smooth(ctc), label=label)
        ax.set_title(f"CTC training, {name}")
        ax.set_xlabel("training minutes (wall clock)")
        ax.set_ylabel("CTC loss (mean over 25 updates)")
        ax.set_ylim(0, 4)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "ctc-loss.png", dpi=90)

    bestrq = args.pretrain_log is not None
    pts = pretrain_curve([args.pretrain_log] if bestrq else sorted((args.work / "logs").glob("run-*.log")))
    steps = list(pts)
    if steps:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, [pts[s][0] for s in steps], label="masked-prediction loss" if bestrq else "contrastive loss")
        ax.plot(steps, [pts[s][1] for s in steps], color="grey", ls="--", lw=1,
                label="chance (label entropy)" if bestrq else "chance (ln 51)")
        ax.set_xlabel("pre-training updates")
        ax.set_ylabel("loss (nats)")
        ax2 = ax.twinx()
        ax2.plot(steps, [pts[s][2] for s in steps], color="C1", label="accuracy")
        ax2.set_ylabel("accuracy on masked steps")
        ax.set_title("BEST-RQ pre-training" if bestrq else "wav2vec 2.0 pre-training")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out / "pretraining.png", dpi=90)
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"ablation: wrote {args.out}/ablation.md, ctc-loss.png" + (", pretraining.png" if steps else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work", type=Path, default=HERE / "work" / "full")
    r.add_argument("--label-minutes", type=float, default=10.0)
    r.add_argument("--minutes", type=float, default=15.0, help="training budget of each of the two runs")
    r.add_argument("--threads", type=int, default=1, help="torch threads of each of the two runs")
    r.add_argument("--seed", type=int, default=1234)
    r.add_argument("--bf16", action="store_true", help="both arms: finetune.py --bf16 (bfloat16 autocast)")
    r.add_argument("--pretrained", type=Path, default=None, help="pre-trained HF folder (default WORK/pretrain/hf)")
    r.add_argument("--out", type=Path, default=None, help="the pair's folder (default WORK/ablation-<L>min)")
    p = sub.add_parser("report")
    p.add_argument("--work", type=Path, default=HERE / "work" / "full")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pair", action="append", default=[], metavar="NAME=FOLDER",
                   help="a pair's folder (holding finetune/ and scratch/) and its row label; repeatable")
    p.add_argument("--pretrain-log", type=Path, default=None, help="a pretrain.py --objective bestrq log")
    args = ap.parse_args()
    (run if args.cmd == "run" else report)(args)


if __name__ == "__main__":
    main()
