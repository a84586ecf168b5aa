"""RoBERTa (Liu et al. 2019): dynamic masking over FULL-SENTENCES rows, no NSP, Adam(0.9, 0.98),
eps 1e-6, weight decay 0.01, linear decay, 512-token rows. Base: fairseq's published recipe (lr
5e-4, warmup 10k, batch 2048, 125k updates); large: the paper's Table 9 (lr 4e-4, warmup 30k,
batch 8k, 500k steps). No token types (type_vocab_size 1).

    python -m lm_jax.pretrain --config=configs/roberta.py:large --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.b2": 0.98,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
    "model.type_vocab_size": 1,
}
SIZES = {
    "base": {
        "train.learning_rate": 5e-4,
        "train.batch_size": 2048,
        "train.steps": 125_000,
        "train.warmup_steps": 10_000,
    },
    "large": {
        "train.learning_rate": 4e-4,
        "train.batch_size": 8192,
        "train.steps": 500_000,
        "train.warmup_steps": 30_000,
    },
}


def get_config(size: str = "tiny"):
    return sized_config("mlm", size, RECIPE, SIZES)
