#!/usr/bin/env bash
# Needs `cargo build --release -p qila` and `cargo test -p qila-e2e --test e2e python` (for the Python component) first.
# Times `POST /api/v1/plugins` (verify + load + record) for a small Rust and a large Python component, 5 times each.
set -euo pipefail
cd "$(dirname "$0")/../.."
Q=./target/release/qila
W=$(mktemp -d); D=$W/data
$Q --data-dir $D plugin keygen --vendor "Bench" --out $W/bench >/dev/null
echo 'egress: ["api.example.org:443"]' > $W/egress.yaml
echo 'tlp: red' > $W/py.yaml
EG=target/wasm-hostile/wasm32-wasip2/release/hostile_egress.wasm
PY=target/python-plugins/iocextract.wasm
$Q --data-dir $D plugin pack $EG --capabilities $W/egress.yaml --key $W/bench.key --out $W/egress.qpkg >/dev/null
$Q --data-dir $D plugin pack $PY --capabilities $W/py.yaml --key $W/bench.key --out $W/py.qpkg >/dev/null
ls -l $W/*.qpkg | awk '{print $5, $9}'
$Q --data-dir $D serve --listen 127.0.0.1:18181 > $W/serve.log 2>&1 &
PID=$!
for i in $(seq 50); do grep -q listening $W/serve.log && break; sleep 0.2; done
TOKEN=$(sed -n 's/^admin token (shown once): //p' $W/serve.log)
curl -s -H "Authorization: Bearer $TOKEN" --data-binary @$W/bench.pub http://127.0.0.1:18181/api/v1/plugin-keys >/dev/null
for pkg in egress py; do
  for i in 1 2 3 4 5; do
    curl -s -o /dev/null -w "$pkg install %{http_code} %{time_total}\n" -H "Authorization: Bearer $TOKEN" -H "X-Qila-Grants: all" \
      -H 'Content-Type: application/octet-stream' --data-binary @$W/$pkg.qpkg http://127.0.0.1:18181/api/v1/plugins
  done
done
kill $PID; wait $PID 2>/dev/null || true
# Start-up with both packages installed (verified again, loaded from the compiled cache).
for i in 1 2 3; do
  S=$(date +%s%N)
  $Q --data-dir $D serve --listen 127.0.0.1:18181 > $W/serve2.log 2>&1 &
  PID=$!
  for j in $(seq 200); do grep -q listening $W/serve2.log && break; sleep 0.01; done
  E=$(date +%s%N); echo "start-up with 2 packages: $(( (E-S)/1000000 )) ms"
  kill $PID; wait $PID 2>/dev/null || true
done
