"""GLUE STS-B: sentence-pair similarity scored 0-5 (regression); dev Pearson and Spearman.

bash scripts/finetune.sh --config=configs/finetune/stsb.py --config.init=runs/mlm
"""

from lm_jax.finetune.schema import finetuning_config, shared_data


def get_config():
    c = finetuning_config()
    c.name = "stsb"
    c.task = "regression"
    c.data.train_path = shared_data("stsb/train.tsv")
    c.data.dev_path = shared_data("stsb/dev.tsv")
    # GLUE's 10 columns without a header: the sentences are 7 and 8, the score 9.
    c.data.header = False
    c.data.text_column, c.data.text_pair_column, c.data.label_column = "7", "8", "9"
    c.data.max_seq_length = 128
    return c
