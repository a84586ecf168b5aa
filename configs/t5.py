"""T5 span corruption (Raffel et al. 2020, sec. 3.1.2 and 3.7): 15% noise in spans of mean
length 3, sentinels from 100 extra ids, Adafactor with inverse-square-root learning rate
(peak 0.01 at 10^4 steps; T5 held it constant before, lm_jax ramps up), batch 128, 2^19 steps,
dropout 0.1 (`T5_RECIPE`, `T5_SIZES` in lm_jax/pretrain/recipes.py). Rows of 568 raw tokens give the
paper's 512-token inputs and 114-token targets. Base / large: T5-base (12 + 12 layers, 768) and
T5-large (24 + 24 layers, 1024).

    python -m lm_jax.pretrain --config=configs/t5.py:base --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import T5_RECIPE, T5_SIZES, sized_config

RECIPE = {
    **T5_RECIPE,
    "tokenizer.extra_ids": 100,
    "objective_options.noise_density": 0.15,
    "objective_options.mean_noise_span_length": 3.0,
}


def get_config(size: str = "tiny"):
    return sized_config("t5", size, RECIPE, T5_SIZES)
