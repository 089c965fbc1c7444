#!/usr/bin/env bash
# Create the virtual environment, installing Debian's venv support first when a
# bare Debian python3 lacks it.
set -euo pipefail
venv="${1:-.venv}"
if [ -x "$venv/bin/python" ]; then exit 0; fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip
    else
        echo "python3 lacks venv/ensurepip: install python3-venv (Debian) and run again" >&2
        exit 1
    fi
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
