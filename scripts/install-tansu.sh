#!/usr/bin/env bash
# Installs Tansu 0.6.0 (the Kafka-compatible broker EWN tests and demos run on) from
# crates.io, once per machine. Idempotent: does nothing when the right version is present.
# About 16 minutes on a 2-core machine the first time.
set -euo pipefail
want="0.6.0"
bin="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^tansu $want\$"; then
  echo "tansu $want already installed at $bin"
  exit 0
fi
echo "installing tansu $want (takes ~16 minutes on 2 cores the first time)..."
cargo install tansu --version "$want" --locked --no-default-features --features dynostore,libsql
"$bin" --version
