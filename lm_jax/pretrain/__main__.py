"""`python -m lm_jax.pretrain`: see `lm_jax.pretrain.cli`."""

import sys

from lm_jax.pretrain.cli import main

sys.exit(main())
