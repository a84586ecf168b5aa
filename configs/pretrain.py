"""Pretraining on the offline Wikipedia sample with a small encoder (2 layers, hidden 128),
sized to finish in a few minutes on a 2-core CPU. The part after ":" names the objective and
fills `config.objective_options` with that objective's own defaults; `name=weight,...` mixes
objectives of one model family (each step trains one, drawn by weight):

    python -m lm_jax.pretrain --config=configs/pretrain.py            # BERT MLM
    python -m lm_jax.pretrain --config=configs/pretrain.py:wwm --config.objective_options.rate=0.2
    python -m lm_jax.pretrain --config=configs/pretrain.py:clm --config.train.steps=2000
    python -m lm_jax.pretrain --config=configs/pretrain.py:mlm=0.5,clm=0.25,prefix_lm=0.25
"""

from lm_jax.errors import ConfigError
from lm_jax.pretrain.schema import mixture_config, pretraining_config


def get_config(objective: str = "mlm"):
    if "=" not in objective:
        return pretraining_config(objective)
    weights = {}
    for part in objective.split(","):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"mixture {objective!r}: write name=weight,name=weight") from None
    return mixture_config(weights)
