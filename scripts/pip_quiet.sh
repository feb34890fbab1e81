# Sourced by install.sh: `pip_quiet ARGS...` runs `$VENV_PYTHON -m pip ARGS` quietly, keeping every line in
# $PIP_LOG. On failure the whole of that call's output is printed (nothing is hidden) and its status returned.
# On success only pip's own WARNING/ERROR/DEPRECATION lines are printed, less the one that a machine's pip
# configuration can cause on every package lookup (an extra index with no page for the package:
# "WARNING: Location '...' is ignored"). Build-backend chatter (setuptools' editable-install banner) stays in
# the log.
pip_quiet() {
  local out status=0
  out="$(mktemp)"
  "${VENV_PYTHON:-.venv/bin/python}" -m pip --disable-pip-version-check --no-input "$@" >"$out" 2>&1 || status=$?
  cat "$out" >>"${PIP_LOG:-/dev/null}"
  if [ "$status" -ne 0 ]; then
    cat "$out" >&2
  else
    grep -E '^(WARNING|ERROR|DEPRECATION):' "$out" | grep -vE "^WARNING: Location '[^']*' is ignored" >&2 || true
  fi
  rm -f "$out"
  return "$status"
}
