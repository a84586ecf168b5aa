"""ERNIE 1.0 (Sun et al. 2019): BERT-base's encoder pretrained in Chinese with knowledge masking:
entities and phrases masked whole (the `entity` objective), words as units elsewhere, on
character tokens. The paper trains on Chinese Wikipedia, Baidu Baike, news and Tieba with its
own entity and phrase annotations and does not list its optimiser settings; lm_jax uses BERT's
recipe (configs/bert.py) and, offline, the People's Daily corpus (January 1998, PKU's gold
segmentation; proper nouns and idioms as the spans, `lm_jax.data.entities`). Its dialogue LM
task is not part of lm_jax. For a real base run bring your annotated corpus:

    python -m lm_jax.pretrain --config=configs/ernie.py:base \\
        --config.data.corpus=annotated_jsonl --config.data.path=zh_entities.jsonl
"""

from lm_jax.pretrain.recipes import BERT_RECIPE, BERT_SIZES, sized_config

RECIPE = {**BERT_RECIPE, "data.corpus": "peoples_daily", "tokenizer.model_type": "char"}


def get_config(size: str = "tiny"):
    return sized_config("entity", size, RECIPE, BERT_SIZES)
