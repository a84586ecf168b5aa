"""Whole-word masking (Google's BERT-wwm release; Cui et al. 2019 for Chinese with a word
segmenter): BERT's masking decided per word, with BERT's recipe (configs/bert.py).

    python -m lm_jax.pretrain --config=configs/wwm.py:base
    (reads corpora/wikipedia_en: English Wikipedia prepared once, README "Data at scale")
"""

from lm_jax.pretrain.recipes import BERT_RECIPE, BERT_SIZES, sized_config


def get_config(size: str = "tiny"):
    return sized_config("wwm", size, BERT_RECIPE, BERT_SIZES)
