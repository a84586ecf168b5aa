"""XLNet permutation LM with two-stream attention (Yang et al. 2019). Large: the paper's Table 7
(Adam eps 1e-6, weight decay 0.01, lr 4e-4, warmup 40k, linear decay, batch 8192, 500k steps,
partial prediction K = 6, 512-token rows). Base: as the paper's sec. 3.1 ablations, BERT-base's
data and recipe (lr 1e-4, warmup 10k, batch 256, 1M steps). No Transformer-XL memory across
batches in the trainer (rows are independent packed documents).

    python -m lm_jax.pretrain --config=configs/xlnet.py:base --config.train.steps=2000
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.b2": 0.999,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
    "objective_options.partial_prediction": 6.0,
}
SIZES = {
    "base": {
        "train.learning_rate": 1e-4,
        "train.batch_size": 256,
        "train.steps": 1_000_000,
        "train.warmup_steps": 10_000,
    },
    "large": {
        "train.learning_rate": 4e-4,
        "train.batch_size": 8192,
        "train.steps": 500_000,
        "train.warmup_steps": 40_000,
    },
}


def get_config(size: str = "tiny"):
    return sized_config("plm", size, RECIPE, SIZES)
