#!/usr/bin/env bash
# Drive `w2v serve` with the real Python clients (openai, wyoming, websockets) on loopback.
# Usage: tools/serve/test-clients.sh [path/to/w2v]   (default: target/debug/w2v)
set -euo pipefail
cd "$(dirname "$0")/../.."
W2V=${1:-target/debug/w2v}
VENV=$(mktemp -d)/venv
if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
fi
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
