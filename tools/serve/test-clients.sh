#!/usr/bin/env bash
# Drive `w2v serve` with the real Python clients (openai, wyoming, websockets) on loopback.
# Usage: tools/serve/test-clients.sh [path/to/w2v]   (default: target/debug/w2v)
set -euo pipefail
cd "$(dirname "$0")/../.."
W2V=${1:-target/debug/w2v}
VENV=$(mktemp -d)/venv
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q openai wyoming websockets pytest
OUT=$(mktemp)
"$W2V" serve --http 127.0.0.1:0 --wyoming 127.0.0.1:0 --max-concurrent 2 >"$OUT" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$(dirname "$VENV")" "$OUT"' EXIT
for _ in $(seq 1 600); do
    [ -s "$OUT" ] && break
    kill -0 $PID 2>/dev/null || { echo "w2v serve exited" >&2; exit 1; }
    sleep 0.1
done
W2V_HTTP=$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$OUT")
W2V_WYOMING=$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["wyoming"])' "$OUT")
export W2V_HTTP W2V_WYOMING
"$VENV/bin/python" -m pytest -q tools/serve/test_clients.py
kill -TERM $PID
wait $PID
