"""Prefix LM (Raffel et al. 2020, sec. 3.2.1: a fully visible prefix, causal continuation) with
T5's pretraining recipe (sec. 3.1.2): Adafactor, inverse-square-root learning rate peaking at
0.01 after 10^4 steps, batch 128 x 512 tokens, 2^19 steps, dropout 0.1.

    python -m lm_jax.pretrain --config=configs/prefix_lm.py:base --config.data.data_dir=...
"""

from lm_jax.config import sized_config

RECIPE = {"train.optimizer": "adafactor", "train.decay": "rsqrt", "train.weight_decay": 0.0}
SIZES = {
    # Adafactor scales its steps by the parameters' RMS: the 0.02-std initialisation of a tiny
    # model needs a larger rate than T5's 0.01.
    "tiny": {"train.learning_rate": 3e-2},
    **{
        size: {
            "train.learning_rate": 1e-2,
            "train.batch_size": 128,
            "train.steps": 2**19,
            "train.warmup_steps": 10_000,
        }
        for size in ("base", "large")
    },
}


def get_config(size: str = "tiny"):
    return sized_config("prefix_lm", size, RECIPE, SIZES)
