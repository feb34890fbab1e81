#!/usr/bin/env bash
# Build verl's own virtual environment (once; again only when this script or pyproject.toml changes) and run
# the verl integration tests in it. verl pins transformers<5.11, which the main environment does not allow.
#
#   scripts/test_verl.sh [pytest args...]
#
# DRGYM_VERL_VENV     where the environment lives (default ~/.cache/drgym/venv-verl, kept between checkouts)
# DRGYM_TORCH_INDEX   an extra index for torch's CPU build (e.g. https://download.pytorch.org/whl/cpu);
#                     unset, torch==2.13.0 comes from the configured indexes / find-links
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DRGYM_VERL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/drgym/venv-verl}"
stamp="$venv/.drgym-verl-stamp"
want="$( (echo "$root"; cat "$root/pyproject.toml" "${BASH_SOURCE[0]}") | sha256sum | cut -c1-16)"  # editable: per checkout

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    constraints="$(mktemp)"
    trap 'rm -f "$constraints"' EXIT
    echo "torch==2.13.0" > "$constraints"  # keeps the resolver from swapping in a CUDA build of torch
    pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
    "${pip[@]}" install ${DRGYM_TORCH_INDEX:+--extra-index-url "$DRGYM_TORCH_INDEX"} "torch==2.13.0" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    # The [verl] extra is verl's full install; a --no-deps verl plus only what its agent-loop, dataset and
    # reward modules import built no faster (22 vs 24 minutes, pip's cache warm, a loaded 2-core machine).
    "${pip[@]}" install -c "$constraints" -e "$root[verl]" pytest pytest-asyncio 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    "$venv/bin/python" -c "import verl.experimental.agent_loop.agent_loop, torch; assert torch.__version__.startswith('2.13')"
    echo "$want" > "$stamp"
fi

cd "$root"
if [ -z "${DRGYM_DATA_MIRROR:-}" ] && [ -d "$root/../shared/data" ]; then
    export DRGYM_DATA_MIRROR="$(cd "$root/../shared/data" && pwd)"
fi
exec "$venv/bin/python" -m pytest tests/integrations/test_verl*.py -q -p no:cacheprovider "$@"
