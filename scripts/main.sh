#!/usr/bin/env bash
# Install (if needed) and run the main job on the embedded local backend: the side-by-side benchmark of the
# agents that need no LLM server, over the offline question sets whose passages are in the local corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/drgym ] && .venv/bin/python -c "import drgym, torch" 2>/dev/null || bash scripts/install.sh
. scripts/env.sh
exec .venv/bin/python -m benchmarks.run "$@"
