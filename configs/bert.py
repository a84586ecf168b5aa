"""BERT masked LM (Devlin et al. 2019, appendix A.2): Adam(0.9, 0.999), L2 weight decay 0.01,
lr 1e-4 warmed up over 10k steps then linearly decayed, batch 256 x 512 tokens, 1M steps, GeLU,
dropout 0.1 (`BERT_RECIPE`, `BERT_SIZES` in lm_jax/pretrain/recipes.py). BERT trained 90% of
the steps on 128-token rows; here all rows are 512. Static masks in the paper; lm_jax masks
dynamically, as RoBERTa.

    python -m lm_jax.pretrain --config=configs/bert.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import BERT_RECIPE, BERT_SIZES, sized_config


def get_config(size: str = "tiny"):
    return sized_config("mlm", size, BERT_RECIPE, BERT_SIZES)
