"""LSTM_reg (Adhikari et al. 2019): the bidirectional LSTM equals a step-by-step NumPy LSTM
(PyTorch's gate order) with ReLU max-pooling over the real tokens; padding changes nothing;
embedding dropout drops whole words and weight dropping one mask per batch; temporal
averaging is the debiased moving average; the fine-tuning command trains it."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_finetune_run import task_files, tiny_finetune  # noqa: F401 (fixture)

from lm_jax.attention import AttentionMask
from lm_jax.config_tools import override
from lm_jax.errors import ConfigError
from lm_jax.finetune import finetune
from lm_jax.finetune.schema import validate
from lm_jax.models.lstm import LSTMConfig, LSTMRegClassifier
from lm_jax.train.optimizer import averaged_params, weight_average

CFG = LSTMConfig(vocab_size=30, embedding_size=6, hidden_size=5)


def model_and_rows(lengths=(7, 4), width=9):
    model = LSTMRegClassifier(CFG, 3, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    ids = np.zeros((len(lengths), width), np.int32)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(1, CFG.vocab_size, n)
    return model, ids, (ids != 0).astype(np.int32)


def logits(model, ids, segments, **kw):
    segments = jnp.asarray(segments)
    mask = AttentionMask.bidirectional(segments)
    return model(jnp.asarray(ids), jnp.zeros_like(segments), mask, **kw)


def numpy_lstm(layer, x):
    """PyTorch's LSTM recurrence, one step at a time."""
    w_i, w_h, b = (np.asarray(p[...]) for p in (layer.w_input, layer.w_hidden, layer.bias))
    sig = lambda v: 1 / (1 + np.exp(-v))
    h, c, out = np.zeros(w_h.shape[0]), np.zeros(w_h.shape[0]), []
    for x_t in x:
        i, f, g, o = np.split(x_t @ w_i + h @ w_h + b, 4)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.array(out)


def test_the_classifier_equals_a_step_by_step_lstm_over_the_real_tokens():
    model, ids, segments = model_and_rows()
    ours = np.asarray(logits(model, ids, segments))
    table = np.asarray(model.embeddings[...])
    for r in range(len(ids)):
        x = table[ids[r, : segments[r].sum()]]
        ahead = numpy_lstm(model.forward_lstm, x)
        back = numpy_lstm(model.backward_lstm, x[::-1])[::-1]
        pooled = np.maximum(np.concatenate([ahead, back], -1), 0).max(0)
        kernel, bias = (
            np.asarray(model.classifier.kernel[...]),
            np.asarray(model.classifier.bias[...]),
        )
        np.testing.assert_allclose(ours[r], pooled @ kernel + bias, atol=1e-5)


def test_padding_changes_nothing():
    model, ids, segments = model_and_rows(width=9)
    wider = np.pad(ids, ((0, 0), (0, 7)))
    np.testing.assert_allclose(
        logits(model, ids, segments), logits(model, wider, (wider != 0).astype(np.int32)), atol=1e-6
    )


def test_embedding_dropout_drops_whole_words_and_weight_drop_one_mask():
    cfg = LSTMConfig(vocab_size=2000, embedding_size=4, hidden_size=50, embedding_dropout=0.5)
    model = LSTMRegClassifier(cfg, 2, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.tile(np.arange(1, 2000), 2)[None])  # every word twice
    embedded = np.asarray(model._embed(ids, nnx.Rngs(dropout=1)))
    table = np.asarray(model.embeddings[...])[np.asarray(ids[0])]
    scale = embedded[0, :, 0] / table[:, 0]
    assert set(np.round(scale, 4)) <= {0.0, 2.0}
    np.testing.assert_array_equal(scale[:1999], scale[1999:])  # a word is dropped everywhere
    assert abs((scale == 0).mean() - 0.5) < 0.04
    w = model.forward_lstm.w_hidden[...]
    dropped = np.asarray(model._dropped(w, nnx.Rngs(dropout=2)))
    assert abs((dropped == 0).mean() - cfg.weight_drop) < 0.02
    kept = dropped != 0
    np.testing.assert_allclose(
        dropped[kept], np.asarray(w)[kept] / (1 - cfg.weight_drop), rtol=1e-6
    )


def test_temporal_averaging_is_the_debiased_moving_average():
    decay, params = 0.9, {"w": jnp.asarray([1.0, -2.0])}
    tx = optax.chain(optax.sgd(0.1), weight_average(decay))
    state, average, history = tx.init(params), np.zeros(2), []
    assert averaged_params(state, decay) is None  # nothing averaged before an update
    for step in range(5):
        grads = {"w": jnp.asarray([0.5, 1.0]) * (step + 1)}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(np.asarray(params["w"]))
        average = decay * average + (1 - decay) * history[-1]
    expected = average / (1 - decay**5)
    np.testing.assert_allclose(averaged_params(state, decay)["w"], expected, rtol=1e-6)


def test_the_fine_tuning_command_trains_lstm_reg_on_its_averaged_weights(task_files, tmp_path):  # noqa: F811
    fields = {
        "lstm.enabled": True,
        "lstm.embedding_size": 32,
        "lstm.hidden_size": 32,
        "train.ema_decay": 0.9,
        "train.learning_rate": 1e-2,
        "train.steps": 60,
        "train.eval_every": 30,
    }
    summary = finetune(tiny_finetune(task_files, **fields), tmp_path / "run", progress=False)
    assert summary.best["accuracy"] > 0.9, summary.best
    assert summary.export_dir is None  # no Hugging Face class for it


def test_lstm_settings_are_checked(task_files, tmp_path):  # noqa: F811
    config = tiny_finetune(task_files, **{"lstm.enabled": True})
    with pytest.raises(ConfigError, match="LSTM_reg trains from scratch"):
        validate(override(config, {"init": str(tmp_path)}))
    with pytest.raises(ConfigError, match="lstm.dropout must be in"):
        validate(
            override(tiny_finetune(task_files, **{"lstm.enabled": True}), {"lstm.dropout": 1.0})
        )
    with pytest.raises(ConfigError, match="train.ema_decay"):
        validate(tiny_finetune(task_files, **{"train.ema_decay": 1.0}))


def test_evaluations_score_the_average_when_the_run_keeps_one():
    from lm_jax.train.loop import evaluated_params
    from lm_jax.train.optimizer import make_optimizer
    from lm_jax.train.settings import train_settings
    from lm_jax.train.step import TrainState

    train = override(train_settings(), {"ema_decay": 0.5, "warmup_steps": 0, "steps": 10})
    tx, _ = make_optimizer(train)
    params = {"w": jnp.ones(3)}
    state = TrainState.create(params, tx)
    assert evaluated_params(state, train) is state.params  # before any update
    for _ in range(2):
        updates, opt_state = tx.update({"w": jnp.ones(3)}, state.opt_state, state.params)
        state = state.replace(
            params=optax.apply_updates(state.params, updates), opt_state=opt_state
        )
    average = evaluated_params(state, train)
    np.testing.assert_allclose(average["w"], averaged_params(state.opt_state, 0.5)["w"])
    assert not np.allclose(average["w"], state.params["w"])
    plain = override(train_settings(), {"warmup_steps": 0, "steps": 10})
    assert evaluated_params(state, plain) is state.params
