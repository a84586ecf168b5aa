"""UL2-style mixture of denoisers (Tay et al. 2022, sec. 3.1.2) on the T5 encoder-decoder: the
paper's R-denoisers (span corruption with mean span 3 or 8 at 15% noise) and X-denoisers (mean
3 or 8 at 50% noise; mean 64 at 15% or 50%), equally weighted, each step training one drawn
from (seed, step). Not included: the S-denoiser (sequence-to-sequence prefix LM; lm_jax's
prefix_lm trains the encoder family) and the paradigm tokens ([NLU], [NLG], [S2S]) prepended to
inputs. Optimiser and sizes: T5's (`T5_RECIPE`, `T5_SIZES` in lm_jax/pretrain/recipes.py).

    python -m lm_jax.pretrain --config=configs/ul2.py:base --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import T5_RECIPE, T5_SIZES, sized_config
from lm_jax.pretrain.schema import MIXTURE, family_defaults, objective_options

DENOISERS = {  # name: (mean span length, noise density)
    "r3": (3.0, 0.15),
    "r8": (8.0, 0.15),
    "x3": (3.0, 0.5),
    "x8": (8.0, 0.5),
    "x64_15": (64.0, 0.15),
    "x64_50": (64.0, 0.5),
}
RECIPE = {**T5_RECIPE, "tokenizer.extra_ids": 100}


def get_config(size: str = "tiny"):
    c = sized_config(MIXTURE, size, RECIPE, T5_SIZES)
    family_defaults(c, "t5")  # T5 v1.0: ReLU, 32 relative buckets
    for name, (mean_span, density) in DENOISERS.items():
        c.mixture[name] = {"objective": "t5", "weight": 1.0}
        c.mixture[name].options = objective_options("t5")
        c.mixture[name].options.mean_noise_span_length = mean_span
        c.mixture[name].options.noise_density = density
    return c
