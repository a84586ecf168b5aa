"""ALBERT's n-gram masking and optimiser (Lan et al. 2020, sec. 4.1): n-grams of up to 3 words,
LAMB with lr 0.00176, batch 4096, 125k steps, 512-token rows, no dropout (sec. 4.10); warmup
3125 steps as in the authors' code. The model is a BERT encoder: ALBERT's cross-layer
parameter sharing is not part of lm_jax.

    python -m lm_jax.pretrain --config=configs/albert.py:large --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.optimizer": "lamb",
    "train.b2": 0.999,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "model.dropout_rate": 0.0,
}
SIZES = {
    size: {
        "train.learning_rate": 0.00176,
        "train.batch_size": 4096,
        "train.steps": 125_000,
        "train.warmup_steps": 3125,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("ngram", size, RECIPE, SIZES)
