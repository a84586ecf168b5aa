"""MASS (Song et al. 2019, sec. 4.1): one fragment of 50% of each row masked in the encoder and
predicted by the decoder; a 6 + 6-layer Transformer of width 1024, 8 heads, FFN 4096, Adam with
lr 1e-4. The paper's batch is 3000 tokens per GPU on 8 GPUs (about 48 rows of 512) and it gives
no step count (500k here). Base: that 6-layer model; large: 12 + 12 layers of 1024 (not in the
paper), same recipe.

    python -m lm_jax.pretrain --config=configs/mass.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.b2": 0.98,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
    "objective_options.fragment_ratio": 0.5,
}
PAPER_MODEL = {
    "model.hidden_size": 1024,
    "model.num_heads": 8,
    "model.intermediate_size": 4096,
}
SIZES = {
    size: {
        **PAPER_MODEL,
        "model.num_layers": layers,
        "train.learning_rate": 1e-4,
        "train.batch_size": 48,
        "train.steps": 500_000,
        "train.warmup_steps": 4000,  # not given in the paper
    }
    for size, layers in (("base", 6), ("large", 12))
}


def get_config(size: str = "tiny"):
    return sized_config("mass", size, RECIPE, SIZES)
