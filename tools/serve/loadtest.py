#!/usr/bin/env python3
"""Load test of `w2v serve` on loopback, stopping by itself.

Starts the server (the shipped model unless --model), sends --requests uploads of the sample
files from --concurrency threads (OpenAI-style multipart, stdlib only), samples the server's
resident memory every 100 ms, and prints latency percentiles, throughput, failures and memory.
Exits 1 if a request fails other than with the documented "busy" answer (503), or if memory
grows between the second quarter and the last quarter of the run by more than --max-growth-mb.

    cargo build --release
    python3 tools/serve/loadtest.py --w2v target/release/w2v --requests 240 --concurrency 16
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def upload(url, name, data, timeout):
    boundary = "w2vLoadTestBoundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nw2v\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, json.load(r)["text"]
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    except Exception as e:  # connection refused, reset, timeout
        status, text = 0, repr(e)
    return status, time.perf_counter() - t0, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--w2v", default=str(REPO / "target/release/w2v"))
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-concurrent", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--deadline", type=float, default=600.0, help="stop after this many seconds")
    ap.add_argument("--max-growth-mb", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    cmd = [args.w2v, "serve", "--http", "127.0.0.1:0", "--max-concurrent", str(args.max_concurrent),
           "--max-queue", str(args.max_queue)]
    if args.model:
        cmd += ["--model", args.model]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        addr = json.loads(server.stdout.readline())["http"]
        url = f"http://{addr}/v1/audio/transcriptions"
        rows = [l.split("\t") for l in (REPO / "samples/samples.tsv").read_text().splitlines()[1:]]
        files = [(p, (REPO / "samples" / p).read_bytes(), t.strip().upper()) for p, t in rows]

        memory = []
        stop = threading.Event()

        def sample_memory():
            t0 = time.perf_counter()
            while not stop.is_set():
                memory.append((time.perf_counter() - t0, rss_mb(server.pid)))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        start = time.perf_counter()
        results = []
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            futures = []
            for i in range(args.requests):
                name, data, expected = files[i % len(files)]
                futures.append((expected, pool.submit(upload, url, name, data, args.deadline)))
            for expected, f in futures:
                remaining = max(1.0, args.deadline - (time.perf_counter() - start))
                status, seconds, text = f.result(timeout=remaining)
                results.append((status, seconds, text, expected))
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=60)

    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    failed = [r for r in results if r[0] not in (200, 503)]
    wrong = sum(1 for r in ok if r[2] != r[3])
    lat = sorted(r[1] for r in ok)
    pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else float("nan")
    n = len(memory)
    q2 = [m for _, m in memory[n // 4 : n // 2]] or [0]
    q4 = [m for _, m in memory[3 * n // 4 :]] or [0]
    report = {
        "requests": len(results), "ok": len(ok), "busy": len(busy), "failed": len(failed),
        "transcripts_differing_from_reference": wrong,
        "concurrency": args.concurrency, "max_concurrent": args.max_concurrent,
        "wall_seconds": round(wall, 2), "requests_per_second": round(len(results) / wall, 2),
        "latency_p50_s": round(pct(50), 3), "latency_p95_s": round(pct(95), 3),
        "latency_p99_s": round(pct(99), 3), "latency_max_s": round(lat[-1], 3) if lat else None,
        "rss_peak_mb": round(max(m for _, m in memory), 1) if memory else None,
        "rss_q2_mean_mb": round(statistics.mean(q2), 1), "rss_q4_mean_mb": round(statistics.mean(q4), 1),
    }
    growth = report["rss_q4_mean_mb"] - report["rss_q2_mean_mb"]
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:40} {v}")
    if failed:
        print("failures:", [(s, t[:120]) for s, _, t, _ in failed[:5]])
    if failed or growth > args.max_growth_mb or len(results) < args.requests:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
