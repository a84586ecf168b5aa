"""Default pretraining run: a small BERT (2 layers, hidden 128) with MLM on the offline
Wikipedia sample, sized to finish in a few minutes on a 2-core CPU.

    python -m lm_jax.pretrain --config=configs/pretrain.py --config.train.steps=2000
"""

from lm_jax.config import pretraining_config


def get_config():
    return pretraining_config()
