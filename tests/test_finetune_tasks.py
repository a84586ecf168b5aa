"""lm_jax.finetune.tasks: layer-wise learning-rate decay as ELECTRA's `_get_layer_lrs`."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lm_jax.finetune.tasks import layer_decay_factors
from lm_jax.models import TransformerConfig
from lm_jax.models.encoder import EncoderForSequenceClassification
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.settings import train_settings

CFG = TransformerConfig(
    vocab_size=50, hidden_size=8, num_layers=3, num_heads=2, intermediate_size=16, max_position=8
)


def electra_factor(name: str, layers: int, decay: float) -> float:
    """ELECTRA's depth table: embeddings 0, encoder/layer_i i + 1, the task head L + 2."""
    if "embeddings" in name:
        depth = 0
    elif "layers/" in name:
        depth = int(name.split("layers/")[1].split("/")[0]) + 1
    else:
        depth = layers + 2
    return decay ** (layers + 2 - depth)


def test_factors_follow_electra_and_scale_each_update():
    model = EncoderForSequenceClassification(CFG, 2, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    factors = layer_decay_factors(params, CFG.num_layers, 0.8)
    flat = {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path[:-1]): float(v)
        for path, v in jax.tree_util.tree_flatten_with_path(factors)[0]
    }
    for name, value in flat.items():
        assert value == np.float32(electra_factor(name, 3, 0.8)), name
    assert flat["head/classifier/kernel"] == 1.0 and flat["encoder/layers/2/output_norm/scale"] == (
        np.float32(0.8**2)
    )

    t = ml_collections.ConfigDict(train_settings())
    t.update(warmup_steps=0, clip_norm=0.0, weight_decay=0.0)
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
    plain, _ = make_optimizer(t)
    decayed, _ = make_optimizer(t, factors)
    step = lambda tx: tx.update(grads, tx.init(params), params)[0]
    for a, b, f in zip(*(jax.tree.leaves(x) for x in (step(plain), step(decayed), factors))):
        np.testing.assert_allclose(b, a * f, rtol=1e-6)
    assert optax.tree.norm(step(decayed)) < optax.tree.norm(step(plain))
