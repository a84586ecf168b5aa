#!/usr/bin/env bash
# Fine-tuning: set up (once), then fine-tune on the task chosen on the command line.
#   bash scripts/finetune.sh --config=configs/finetune/sst2.py                    # from scratch
#   bash scripts/finetune.sh --config=configs/finetune/sst2.py --config.init=runs/mlm
#   bash scripts/finetune.sh --config=configs/finetune/rte.py --config.init=path/to/hf_folder
set -euo pipefail
# bootstrap.sh reads its own first argument (the pip extra): pass "" explicitly, or `source`
# would hand it this script's arguments.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" ""
cd "$LM_JAX_ROOT"
exec "$LM_JAX_PYTHON" -m lm_jax.finetune "$@"
