"""GLUE RTE: textual entailment of sentence pairs (0 = entailment, 1 = not); dev accuracy.

bash scripts/finetune.sh --config=configs/finetune/rte.py --config.init=runs/mlm
"""

from lm_jax.finetune.schema import finetuning_config, shared_data


def get_config():
    c = finetuning_config()
    c.name = "rte"
    c.data.train_path = shared_data("rte/train.tsv")
    c.data.dev_path = shared_data("rte/dev.tsv")
    c.data.text_column, c.data.text_pair_column = "sentence1", "sentence2"
    c.data.labels = ("0", "1")
    c.text_to_text.label_words = ("entailment", "not_entailment")  # T5 targets, if text_to_text
    c.data.max_seq_length = 128
    return c
