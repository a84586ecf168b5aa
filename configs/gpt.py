"""Causal LM (GPT, Radford et al. 2018, sec. 4.1): Adam with max lr 2.5e-4, linear warmup over
2000 updates then cosine annealing to 0, batch 64 x 512 tokens, L2 weight decay 0.01, dropout
0.1, GeLU. The paper trains 100 epochs of BooksCorpus; set config.train.steps for your corpus
(1M here). The model is the shared encoder under a causal mask, with learned positions.

    python -m lm_jax.pretrain --config=configs/gpt.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {"train.b2": 0.999, "train.eps": 1e-8, "train.weight_decay": 0.01, "train.decay": "cosine"}
SIZES = {
    size: {
        "train.learning_rate": 2.5e-4,
        "train.batch_size": 64,
        "train.steps": 1_000_000,
        "train.warmup_steps": 2000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("clm", size, RECIPE, SIZES)
