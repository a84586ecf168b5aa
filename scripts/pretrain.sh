#!/usr/bin/env bash
# The main job: set up (once), then pretrain with the objective chosen on the command line.
#   bash scripts/pretrain.sh                              # BERT MLM on the offline Wikipedia sample
#   bash scripts/pretrain.sh --config.objective=mlm --config.train.steps=2000
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$LM_JAX_ROOT"
exec "$LM_JAX_PYTHON" -m lm_jax.pretrain "$@"
