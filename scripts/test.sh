#!/usr/bin/env bash
# Install (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && .venv/bin/python -c "import drgym, torch" 2>/dev/null || bash scripts/install.sh
. scripts/env.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
