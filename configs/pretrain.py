"""Pretraining on the offline Wikipedia sample with a small encoder (2 layers, hidden 128),
sized to finish in a few minutes on a 2-core CPU. The part after ":" names the objective and
fills `config.objective_options` with that objective's own defaults:

    python -m lm_jax.pretrain --config=configs/pretrain.py            # BERT MLM
    python -m lm_jax.pretrain --config=configs/pretrain.py:wwm --config.objective_options.rate=0.2
    python -m lm_jax.pretrain --config=configs/pretrain.py:clm --config.train.steps=2000
"""

from lm_jax.config import pretraining_config


def get_config(objective: str = "mlm"):
    return pretraining_config(objective)
