#!/usr/bin/env bash
# Rewrites tests/fixtures/golden/* from the current code. Review `git diff` afterwards:
# every changed line is a change in scoring or correlation behaviour.
set -euo pipefail
cd "$(dirname "$0")/.."
EWN_UPDATE_GOLDEN=1 cargo test -p ewn-processor --test golden
git --no-pager diff --stat -- tests/fixtures/golden
