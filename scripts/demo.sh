#!/usr/bin/env bash
# The first slice of the EWN demo: a Kazakh border post signs and publishes the example
# incidents to a local Tansu broker, and anyone holding the trust store reads them back
# verified. Leaves nothing running. (The full network demo is `ewn demo`, issue 5.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ewn="$root/target/debug/ewn"
tansu="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
work="$(mktemp -d -t ewn-demo-XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
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
echo "== publish schemas/examples/valid.jsonl (raw identifiers are blinded before signing)"
"$ewn" publish --key "$work/kz.pem" --key-id kz-demo-01 --blinding-key "$work/blind.key" \
  --input "$root/schemas/examples/valid.jsonl"
echo "== publish schemas/examples/invalid.jsonl (every line rejected, each error names its field)"
"$ewn" publish --key "$work/kz.pem" --key-id kz-demo-01 --blinding-key "$work/blind.key" \
  --input "$root/schemas/examples/invalid.jsonl" || true
echo "== tail: read back and verify every incident"
"$ewn" tail --topic incidents --trust-store "$work/trust.toml" --from-beginning --count 5 --timeout-secs 30 |
  python3 "$root/scripts/show-incidents.py"
echo "== done; broker stopped, $work removed"
