"""GLUE SST-2 (Socher et al. 2013): binary sentiment of movie-review sentences; dev accuracy.

bash scripts/finetune.sh --config=configs/finetune/sst2.py --config.init=runs/mlm
"""

from lm_jax.finetune.schema import finetuning_config, shared_data


def get_config():
    c = finetuning_config()
    c.name = "sst2"
    c.data.train_path = shared_data("sst2/train.tsv")
    c.data.dev_path = shared_data("sst2/dev.tsv")
    # The text header is "sentence" in train.tsv and "content" in dev.tsv: read by position.
    c.data.text_column, c.data.label_column = "1", "0"
    c.data.labels = ("0", "1")
    c.text_to_text.label_words = ("negative", "positive")  # T5 targets, if text_to_text
    c.data.max_seq_length = 128
    return c
