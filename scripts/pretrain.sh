#!/usr/bin/env bash
# The main job: set up (once), then pretrain with the objective chosen on the command line.
#   bash scripts/pretrain.sh                              # BERT MLM on the offline Wikipedia sample
#   bash scripts/pretrain.sh --config=configs/pretrain.py:wwm --config.train.steps=2000
set -euo pipefail
# bootstrap.sh reads its own first argument (the pip extra): pass "" explicitly, or `source`
# would hand it this script's arguments.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" ""
cd "$LM_JAX_ROOT"
exec "$LM_JAX_PYTHON" -m lm_jax.pretrain "$@"
