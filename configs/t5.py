"""T5 span corruption (Raffel et al. 2020, sec. 3.1.2 and 3.7): 15% noise in spans of mean
length 3, sentinels from 100 extra ids, Adafactor with inverse-square-root learning rate
(peak 0.01 at 10^4 steps; T5 held it constant before, lm_jax ramps up), batch 128, 2^19 steps,
dropout 0.1. Rows of 568 raw tokens give the paper's 512-token inputs and 114-token targets.
Base / large: T5-base (12 + 12 layers, 768) and T5-large (24 + 24 layers, 1024).

    python -m lm_jax.pretrain --config=configs/t5.py:base --config.mesh.fsdp=8
"""

from lm_jax.config import sized_config

RECIPE = {
    "train.optimizer": "adafactor",
    "train.decay": "rsqrt",
    "train.weight_decay": 0.0,
    "tokenizer.extra_ids": 100,
    "objective_options.noise_density": 0.15,
    "objective_options.mean_noise_span_length": 3.0,
}
SIZES = {
    # Adafactor scales its steps by the parameters' RMS: the 0.02-std initialisation of a tiny
    # model needs a larger rate than T5's 0.01.
    "tiny": {"train.learning_rate": 3e-2},
    **{
        size: {
            "train.learning_rate": 1e-2,
            "train.batch_size": 128,
            "train.steps": 2**19,
            "train.warmup_steps": 10_000,
            "data.seq_len": 568,
            "model.max_position": 568,
        }
        for size in ("base", "large")
    },
}


def get_config(size: str = "tiny"):
    return sized_config("t5", size, RECIPE, SIZES)
