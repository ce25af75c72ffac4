#!/usr/bin/env bash
# Creates bench/kvpress/.venv with KVPress, torch and transformers pinned in requirements.txt.
# Idempotent: does nothing when the venv exists and requirements.txt has not changed since it
# was installed. Separate from the project's .venv on purpose: torch is large and CI never
# needs it. Needs python3-venv (scripts/setup.sh installs it) and a few GB of disk (PyPI's
# torch wheel is the CUDA build; it runs on the CPU as well).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
echo "kvpress setup: installing into $venv (torch is ~1 GB to download)"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$stamp"
