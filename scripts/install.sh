#!/bin/sh
# The one install recipe, run by `make` (development venv) and by the Dockerfile (image),
# so the two cannot drift apart; tests/test_packaging.py checks both call it and runs it.
#   scripts/install.sh VENV PIP_INSTALL_ARGS...      e.g. scripts/install.sh .venv -e '.[dev]'
# TORCH_INDEX (optional): an extra package index for torch, e.g. the CPU-only builds.
set -eu
venv=$1
shift
test -x "$venv/bin/python" || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "$@"
