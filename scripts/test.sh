#!/usr/bin/env bash
# The test suite: set up (once, with test dependencies), then pytest. Extra arguments go to pytest.
#   bash scripts/test.sh            # default run (slow tests excluded)
#   bash scripts/test.sh -m slow    # only the slow tests
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" test
cd "$LM_JAX_ROOT"
exec "$LM_JAX_PYTHON" -m pytest "$@"
