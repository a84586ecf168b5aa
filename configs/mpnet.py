"""MPNet masked and permuted LM with position compensation (Song et al. 2020, sec. 3.1): the
RoBERTa-base large-batch recipe: Adam(0.9, 0.98), eps 1e-6, weight decay 0.01, batch 8192,
500k steps, peak lr 6e-4 after 24k warmup steps, linear decay, 512-token rows, relative
position buckets.

    python -m lm_jax.pretrain --config=configs/mpnet.py:base --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {"train.b2": 0.98, "train.eps": 1e-6, "train.weight_decay": 0.01, "train.decay": "linear"}
SIZES = {
    size: {
        "train.learning_rate": 6e-4,
        "train.batch_size": 8192,
        "train.steps": 500_000,
        "train.warmup_steps": 24_000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("mpnet", size, RECIPE, SIZES)
