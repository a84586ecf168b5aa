"""`python -m lm_jax.finetune`: see `lm_jax.finetune.cli`."""

import sys

from lm_jax.finetune.cli import main

sys.exit(main())
