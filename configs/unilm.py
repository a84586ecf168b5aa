"""UniLM (Dong et al. 2019, sec. 3): bidirectional, left-to-right, right-to-left and
sequence-to-sequence masks mixed in one model, token types 0-3 as LM identifiers, 15% masking.
Adam(0.9, 0.999), weight decay 0.01, lr 3e-5 warmed up over 40k steps then linearly decayed,
batch 330, 770k steps, 512-token rows (the paper starts from BERT-large's weights; here from
scratch unless you load them).

    python -m lm_jax.pretrain --config=configs/unilm.py:large --config.mesh.fsdp=8
"""

from lm_jax.pretrain.recipes import sized_config

RECIPE = {
    "train.b2": 0.999,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
    "model.type_vocab_size": 4,
}
SIZES = {
    size: {
        "train.learning_rate": 3e-5,
        "train.batch_size": 330,
        "train.steps": 770_000,
        "train.warmup_steps": 40_000,
    }
    for size in ("base", "large")
}


def get_config(size: str = "tiny"):
    return sized_config("unilm", size, RECIPE, SIZES)
