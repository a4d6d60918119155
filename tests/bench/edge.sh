#!/usr/bin/env bash
# The HTTP edge under the two reproductions of issue 11, against a release `qila serve`:
#   1. 300 anonymous connections at once, each sending a 4 MiB webhook body with a (wrong) signature:
#      the server's peak RSS (VmHWM) before and after, and how the senders were answered;
#   2. 500 connections that send half a request head and stop: the time until the server has closed all of them.
# Needs `cargo build --release -p qila` (or QILA=path/to/qila) and python3. Usage: tests/bench/edge.sh [SENDERS] [HALF_HEADS]
set -euo pipefail
cd "$(dirname "$0")/../.."
Q=${QILA:-./target/release/qila}
SENDERS=${1:-300}
HALF=${2:-500}
W=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
$Q --data-dir "$W/data" serve --listen 127.0.0.1:0 > "$W/serve.log" 2>&1 &
PID=$!
for _ in $(seq 300); do grep -q '^listening on' "$W/serve.log" && break; sleep 0.2; done
ADDR=$(sed -n 's|^listening on http://||p' "$W/serve.log")
hwm() { awk '/VmHWM/ {print $2}' /proc/$PID/status; }
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
echo "qila serve at $ADDR, pid $PID; RSS $(( $(rss) / 1024 )) MiB, peak $(( $(hwm) / 1024 )) MiB before"
python3 - "$ADDR" "$SENDERS" "$HALF" "$PID" <<'PY'
import asyncio, sys, time
host, port = sys.argv[1].rsplit(":", 1)
senders, half, pid = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
BODY = 4 * 1024 * 1024

def peak_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024

async def sender(i, answers):
    r, w = await asyncio.open_connection(host, int(port))
    head = (f"POST /api/v1/hooks/approve-block HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n"
            f"X-Hub-Signature-256: sha256={'0' * 64}\r\nX-GitHub-Delivery: bench-{i}\r\n\r\n").encode()
    try:
        w.write(head)
        chunk = b" " * 65536
        for _ in range(BODY // len(chunk)):
            w.write(chunk)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    try:
        line = await asyncio.wait_for(r.readline(), 60)
        status = line.split(b" ")[1].decode() if line else "closed"
    except Exception:
        status = "reset"
    answers[status] = answers.get(status, 0) + 1
    w.close()

async def half_head(opened, closed_at):
    r, w = await asyncio.open_connection(host, int(port))
    w.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    await w.drain()
    opened.append(1)
    await r.read()  # until the server closes
    closed_at.append(time.monotonic())

async def main():
    answers = {}
    t = time.monotonic()
    await asyncio.gather(*(sender(i, answers) for i in range(senders)))
    print(f"{senders} senders of {BODY >> 20} MiB: answers {answers} in {time.monotonic() - t:.1f} s; "
          f"server peak RSS {peak_mib()} MiB")
    opened, closed_at = [], []
    t = time.monotonic()
    tasks = [asyncio.create_task(half_head(opened, closed_at)) for _ in range(half)]
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    print(f"{half} half-sent heads: all closed {max(closed_at) - t:.1f} s after the first was opened")

asyncio.run(main())
PY
echo "server RSS $(( $(rss) / 1024 )) MiB after; peak $(( $(hwm) / 1024 )) MiB"
