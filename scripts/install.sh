#!/usr/bin/env bash
# Create .venv and install drgym with every extra the tests and demos use.
# torch is pinned and installed first: an unpinned torch pulls several GB of CUDA packages.
# pip's full output goes to .venv/install.log; the terminal shows real warnings and, on failure, everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pip_quiet.sh
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VENV_PYTHON=.venv/bin/python
PIP_LOG=.venv/install.log
: >"$PIP_LOG"
echo "installing into .venv (log: $PIP_LOG)"
pip_quiet install --quiet --upgrade pip
pip_quiet install --quiet "torch==2.13.0"
pip_quiet install --quiet -e ".[agents,sb3,pdf,trl,serve,dev]"
echo "done: .venv/bin/drgym --help"
