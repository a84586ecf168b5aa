"""BART text infilling + sentence permutation (Lewis et al. 2020, sec. 5.1): 30% of words masked
in Poisson(3) spans, every document's sentences permuted; batch 8000 and 500k steps following
RoBERTa, whose large recipe supplies the optimiser (Adam(0.9, 0.98), eps 1e-6, weight decay
0.01, lr 4e-4, warmup 30k, linear decay). Base: BART-base, 6 + 6 layers of 768; large:
BART-large, 12 + 12 layers of 1024.

    python -m lm_jax.pretrain --config=configs/bart.py:large --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.b2": 0.98,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
    "objective_options.mask_ratio": 0.3,
    "objective_options.poisson_lambda": 3.0,
    "objective_options.permute_sentence_ratio": 1.0,
}
SIZES = {
    size: {
        "train.learning_rate": 4e-4,
        "train.batch_size": 8000,
        "train.steps": 500_000,
        "train.warmup_steps": 30_000,
        "model.num_layers": layers,
    }
    for size, layers in (("base", 6), ("large", 12))
}


def get_config(size: str = "tiny"):
    return sized_config("bart", size, RECIPE, SIZES)
