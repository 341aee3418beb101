#!/usr/bin/env bash
# Installs what the tests need besides Rust and Tansu (`make broker` does Tansu), once per
# machine and idempotently; `make test` runs it first.
#
#   - a project-local Python virtual environment (default .venv, git-ignored) with the
#     packages pinned in tests/requirements.txt, rebuilt whenever that file changes or the
#     environment is broken; the tests run its interpreter (EWN_PYTHON, set by the Makefile);
#   - Debian's python3-venv when `python3 -m venv` cannot create one (a fresh Debian's
#     python3 may come without venv and pip);
#   - Debian's chromium and chromium-driver when /usr/bin/chromium or /usr/bin/chromedriver
#     is missing (tests/console.rs drives the desk console in it);
#   - Debian's zsh and fish when missing (tests/completions.rs loads the completion
#     scripts in them).
#
# Usage: scripts/test-deps.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
requirements=tests/requirements.txt
stamp="$venv/.ewn-requirements"
python="${PYTHON:-python3}"

updated=false
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: need the Debian packages $*, and this machine has no apt-get; install them" >&2
    exit 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "test-deps: installing $* needs root (or sudo)" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  if ! $updated; then
    "${sudo[@]}" apt-get update -qq
    updated=true
  fi
  echo "test-deps: apt-get install $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python packages: nothing to do when the venv was built from this very requirements file
# and its interpreter still imports them.
if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements" \
  && "$venv/bin/python" -c 'import capvalidator, selenium, fastavro' 2>/dev/null; then
  echo "test-deps: $venv is current"
else
  command -v "$python" >/dev/null 2>&1 || apt_install python3 python3-venv
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    apt_install python3-venv
    "$python" -m venv "$venv"
  fi
  echo "test-deps: installing tests/requirements.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  "$venv/bin/python" -c 'import capvalidator, selenium, fastavro'
  cp "$requirements" "$stamp"
fi

# The browser and its driver, from Debian: a browser downloaded by selenium-manager would
# not match what CI runs, and needs a network the machines do not have.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install chromium chromium-driver
fi
# tests/completions.rs loads `ewn completions` output in each shell it supports.
for shell in zsh fish; do
  command -v "$shell" >/dev/null 2>&1 || apt_install "$shell"
done
echo "test-deps: $("$venv/bin/python" --version), $(/usr/bin/chromium --version 2>/dev/null | head -1)"
