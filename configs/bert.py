"""BERT masked LM (Devlin et al. 2019, appendix A.2): Adam(0.9, 0.999), L2 weight decay 0.01,
lr 1e-4 warmed up over 10k steps then linearly decayed, batch 256 x 512 tokens, 1M steps, GeLU,
dropout 0.1 (BERT trained 90% of the steps on 128-token rows; here all rows are 512). Static
masks in the paper; lm_jax masks dynamically, as RoBERTa.

    python -m lm_jax.pretrain --config=configs/bert.py:base --config.data.data_dir=...
"""

from lm_jax.config import sized_config

RECIPE = {"train.b2": 0.999, "train.eps": 1e-6, "train.weight_decay": 0.01, "train.decay": "linear"}
SIZES = {
    size: {
        "train.learning_rate": 1e-4,
        "train.batch_size": 256,
        "train.steps": 1_000_000,
        "train.warmup_steps": 10_000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("mlm", size, RECIPE, SIZES)
