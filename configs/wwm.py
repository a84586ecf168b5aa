"""Whole-word masking (Google's BERT-wwm release; Cui et al. 2019 for Chinese with a word
segmenter): BERT's masking decided per word, with BERT's optimiser recipe (Adam(0.9, 0.999),
weight decay 0.01, lr 1e-4, warmup 10k, linear decay, batch 256, 1M steps).

    python -m lm_jax.pretrain --config=configs/wwm.py:base --config.data.data_dir=...
"""

from lm_jax.config import sized_config

RECIPE = {"train.b2": 0.999, "train.eps": 1e-6, "train.weight_decay": 0.01, "train.decay": "linear"}
SIZES = {
    size: {
        "train.learning_rate": 1e-4,
        "train.batch_size": 256,
        "train.steps": 1_000_000,
        "train.warmup_steps": 10_000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("wwm", size, RECIPE, SIZES)
