"""ELECTRA replaced-token detection (Clark et al. 2020, Table 6): Adam(0.9, 0.999), eps 1e-6,
weight decay 0.01, warmup 10k, linear decay, lr 2e-4, discriminator loss weight 50, 512-token
rows. Base: batch 256, 766k steps, mask rate 0.15; large: batch 2048, 1.75M steps, mask rate
0.25. The generator is 1/3 of the discriminator's width for base and 1/4 otherwise (the paper's
Base and Small / Large: `config.model_options.generator_size`).

    python -m lm_jax.pretrain --config=configs/electra.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {"train.b2": 0.999, "train.eps": 1e-6, "train.weight_decay": 0.01, "train.decay": "linear"}
SIZES = {
    "base": {
        "train.learning_rate": 2e-4,
        "train.batch_size": 256,
        "train.steps": 766_000,
        "train.warmup_steps": 10_000,
        "model_options.generator_size": 1 / 3,
    },
    "large": {
        "train.learning_rate": 2e-4,
        "train.batch_size": 2048,
        "train.steps": 1_750_000,
        "train.warmup_steps": 10_000,
        "objective_options.rate": 0.25,
    },
}


def get_config(size: str = "tiny"):
    return sized_config("electra", size, RECIPE, SIZES)
