#!/usr/bin/env bash
# The first slices of the EWN demo: a Kazakh border post signs and publishes the example
# incidents to a local Tansu broker, anyone holding the trust store reads them back
# verified, and the stream processor turns them into explained alerts. Leaves nothing
# running. (The full network demo with desks and fan-out is `ewn demo`, issue 5.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ewn="$root/target/debug/ewn"
tansu="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
work="$(mktemp -d -t ewn-demo-XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  [ -n "${process_pid:-}" ] && kill "$process_pid" 2>/dev/null && wait "$process_pid" 2>/dev/null || true
  [ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== starting Tansu on 127.0.0.1:$port (sqlite, $work)"
(cd "$work" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://broker.db >tansu.log 2>&1) &
broker_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export EWN__KAFKA__BROKERS="127.0.0.1:$port" EWN__LOG__LEVEL=warn

echo "== keys: a signing key for KZ (trust store entry added) and the network blinding key"
"$ewn" keygen --state KZ --key-id kz-demo-01 --secret-out "$work/kz.pem" --trust-store "$work/trust.toml"
"$ewn" keygen --blinding-out "$work/blind.key"
echo "== topics"
"$ewn" topics create
admin_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo "== start the stream processor (metrics on http://127.0.0.1:$admin_port/metrics)"
"$ewn" process --trust-store "$work/trust.toml" --admin-listen "127.0.0.1:$admin_port" >"$work/process.log" 2>&1 &
process_pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$admin_port/healthz" >/dev/null && break; sleep 0.1; done
echo "== publish schemas/examples/valid.jsonl, moved to the last hours (raw identifiers are blinded before signing)"
python3 - "$root/schemas/examples/valid.jsonl" >"$work/valid.jsonl" <<'PY'
import datetime, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
now = datetime.datetime.now(datetime.timezone.utc)
for k, r in enumerate(lines):
    r["occurred_at"] = (now - datetime.timedelta(hours=len(lines) - k)).isoformat()
    print(json.dumps(r, ensure_ascii=False))
PY
"$ewn" publish --key "$work/kz.pem" --key-id kz-demo-01 --blinding-key "$work/blind.key" \
  --input "$work/valid.jsonl"
echo "== publish schemas/examples/invalid.jsonl (every line rejected, each error names its field)"
"$ewn" publish --key "$work/kz.pem" --key-id kz-demo-01 --blinding-key "$work/blind.key" \
  --input "$root/schemas/examples/invalid.jsonl" || true
echo "== tail: read back and verify every incident"
"$ewn" tail --topic incidents --trust-store "$work/trust.toml" --from-beginning --count 5 --timeout-secs 30 |
  python3 "$root/scripts/show-incidents.py"
echo "== alerts the processor raised (watch-list hits and an FTF returnee fire at once)"
"$ewn" tail --topic alerts --from-beginning --count 3 --timeout-secs 60 | python3 "$root/scripts/show-alerts.py"
echo "== done; processor and broker stopped, $work removed"
