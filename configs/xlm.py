"""XLM's translation LM (Conneau & Lample 2019): a sentence and its translation in one row, both
masked 15% (80/10/10), positions restarting at the translation, language embeddings as token
types; GELU, dropout 0.1, rows of up to 256 tokens. The authors' example commands train with
Adam (0.9, 0.98) at lr 1e-4 under an inverse-square-root schedule (4,000 warmup steps); the
paper counts training in epochs, so the 100k steps and the batch of 32 here are lm_jax's
choice: set them for your corpus. XLM alternates TLM with MLM on monolingual streams;
lm_jax's mixtures need one row layout, so this config trains TLM alone. Offline the pairs
are Django's interface strings in five languages (`lm_jax.data.translation`); bring your own
corpus for a real run:

    python -m lm_jax.pretrain --config=configs/xlm.py:base \\
        --config.data.corpus=parallel_tsv --config.data.path=pairs.tsv --config.data.languages=fr,de
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "data.corpus": "django_translations",
    "train.decay": "rsqrt",
    "train.b2": 0.98,
    "train.weight_decay": 0.0,
}
SIZES = {
    size: {
        "data.seq_len": 256,
        "train.learning_rate": 1e-4,
        "train.warmup_steps": 4000,
        "train.steps": 100_000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("tlm", size, RECIPE, SIZES)
