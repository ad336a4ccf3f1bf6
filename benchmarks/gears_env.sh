#!/usr/bin/env bash
# Builds the GEARS environment for benchmarks/peers.py (not used by CI).
#
# GEARS (cell-gears 0.1.2, Roohani et al. 2023) lives in a venv of its own (default .venv-gears; override with
# GEARS_VENV=path) so that its dependencies (scanpy, dcor, ...) never enter the project's environment:
#   torch 2.13.0 (pinned: the CPU wheel this machine's pip finds; never an unpinned torch), torch-geometric,
#   cell-gears 0.1.2. benchmarks/peers.py runs GEARS there as a subprocess; the project is not installed in it.
#
# Usage: bash benchmarks/gears_env.sh        build (if needed) and check that gears imports
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${GEARS_VENV:-.venv-gears}"
PINS=(torch==2.13.0 torch-geometric "cell-gears==0.1.2")

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import gears, torch_geometric" >/dev/null 2>&1; then
    echo "gears-env: $VENV is up to date"
else
    start=$(date +%s)
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
    echo "gears-env: built $VENV in $(( $(date +%s) - start )) s"
fi
"$VENV/bin/python" -c "import gears, torch, torch_geometric, scanpy; print('gears-env: cell-gears', \
__import__('importlib.metadata').metadata.version('cell-gears'), 'torch', torch.__version__, \
'torch_geometric', torch_geometric.__version__, 'scanpy', scanpy.__version__)"
