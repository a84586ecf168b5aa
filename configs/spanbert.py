"""SpanBERT (Joshi et al. 2020, sec. 4.1 and appendix B): geometric span lengths (p 0.2, at
most 10 words), the span-boundary objective, Adam(0.9, 0.999) with eps 1e-8, weight decay 0.01,
lr 1e-4 warmed up over 10k steps then linearly decayed, batch 256 x 512 tokens, 2.4M steps.

    python -m lm_jax.pretrain --config=configs/spanbert.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.b2": 0.999,
    "train.eps": 1e-8,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
    "objective_options.geometric_p": 0.2,
    "objective_options.max_span_length": 10,
}
SIZES = {
    size: {
        "train.learning_rate": 1e-4,
        "train.batch_size": 256,
        "train.steps": 2_400_000,
        "train.warmup_steps": 10_000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("span", size, RECIPE, SIZES)
