#!/usr/bin/env bash
# Creates (once) the project's virtual environment and installs lm_jax into it, editable.
# Usage: source scripts/bootstrap.sh [EXTRA]   (EXTRA: "test" adds the test dependencies)
# Re-installs only when requirements*.txt, setup.cfg or the extra change. Sets $LM_JAX_PYTHON.
set -euo pipefail
LM_JAX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LM_JAX_VENV:-$LM_JAX_ROOT/.venv}"
extra="${1:-}"

if [ ! -x "$venv/bin/python" ]; then
  python="${PYTHON:-python3}"
  "$python" - <<'PY' || { echo "error: lm_jax needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
  echo "[bootstrap] creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

stamp="$venv/.lm_jax-installed"
want="$(cat "$LM_JAX_ROOT"/requirements*.txt "$LM_JAX_ROOT/setup.cfg" | sha256sum | cut -c1-16)-${extra}"
have="$(cat "$stamp" 2>/dev/null || true)"
# An environment with the test extra also serves the main job.
if [ "$have" != "$want" ] && [ "$have" != "${want%-*}-test" ]; then
  target="$LM_JAX_ROOT"
  [ -n "$extra" ] && target="$LM_JAX_ROOT[$extra]"
  echo "[bootstrap] installing lm_jax${extra:+[$extra]} and its dependencies (log: $venv/install.log)" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -e "$target" >"$venv/install.log" 2>&1 \
    || { tail -n 40 "$venv/install.log" >&2; echo "error: installing lm_jax failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export LM_JAX_PYTHON="$venv/bin/python"
