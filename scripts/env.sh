# Sourced by the scripts: point the data loader at a local mirror of the data when one sits beside the repo.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${DRGYM_DATA_MIRROR:-}" ] && [ -d "$here/../shared/data" ]; then
  export DRGYM_DATA_MIRROR="$(cd "$here/../shared/data" && pwd)"
fi
