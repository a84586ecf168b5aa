"""Prefix LM (Raffel et al. 2020, sec. 3.2.1: a fully visible prefix, causal continuation) with
T5's pretraining recipe (`T5_RECIPE`, `T5_SIZES` in lm_jax/pretrain/recipes.py: Adafactor,
inverse-square-root learning rate peaking at 0.01 after 10^4 steps, batch 128, 2^19 steps;
568-token rows at base / large, as T5's raw rows).

    python -m lm_jax.pretrain --config=configs/prefix_lm.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import T5_RECIPE, T5_SIZES, sized_config


def get_config(size: str = "tiny"):
    return sized_config("prefix_lm", size, T5_RECIPE, T5_SIZES)
