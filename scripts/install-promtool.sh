#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package, 2.42 on bookworm) when it is absent, for
# `make lint`: `promtool check rules`, `promtool test rules`, and deploy/check.py's checks
# of the dashboard queries. Idempotent. Elsewhere: any Prometheus release's promtool.
set -euo pipefail
if command -v promtool >/dev/null; then
  promtool --version | head -1
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "promtool not found and no apt-get: install promtool from a Prometheus release" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
promtool --version | head -1
