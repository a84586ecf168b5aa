"""Chinese sentiment of hotel reviews (ChnSentiCorp), character tokens (the ERNIE / BERT-wwm
setting: every Han character its own token); 10% held out as dev (no official split), accuracy.

    bash scripts/finetune.sh --config=configs/finetune/chnsenticorp.py --config.init=runs/wwm
"""

from lm_jax.finetune.schema import finetuning_config, shared_data


def get_config():
    c = finetuning_config()
    c.name = "chnsenticorp"
    c.data.train_path = shared_data("zh/ChnSentiCorp_htl_all.csv")
    c.data.dev_fraction = 0.1
    c.data.text_column = "review"
    c.data.labels = ("0", "1")
    c.data.max_seq_length = 128
    c.tokenizer.model_type = "char"  # from scratch: one token per character
    return c
