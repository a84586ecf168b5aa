"""LSTM_reg (Adhikari et al. 2019, "Rethinking Complex Neural Network Architectures for
Document Classification"; the authors' hedwig `RegLSTM`): the non-pretrained classifier every
pretrained number is read against. Embeddings (uniform in [-0.25, 0.25], hedwig's "rand"
mode) with embedding dropout (whole words dropped from the embedding matrix, Gal &
Ghahramani 2016), one bidirectional LSTM layer whose hidden-to-hidden weights are dropped
(DropConnect, "weight dropping", Merity et al. 2018; one mask per batch), ReLU and max-pooling
over the real tokens, dropout, a linear classifier. Temporal averaging of the weights is the
trainer's `train.ema_decay` (`lm_jax.train.optimizer.weight_average`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """Hedwig's Reuters settings: 300-d embeddings, 512 hidden units per direction,
    embedding dropout 0.2, weight drop 0.1, dropout 0.5."""

    vocab_size: int
    embedding_size: int = 300
    hidden_size: int = 512
    embedding_dropout: float = 0.2
    weight_drop: float = 0.1
    dropout: float = 0.5


def _uniform(key, shape, bound: float) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class LSTMLayer(nnx.Module):
    """One direction of an LSTM (PyTorch's gate order i, f, g, o and initialisation
    U(-1/sqrt(H), 1/sqrt(H)); its two biases as one)."""

    def __init__(self, inputs: int, hidden: int, *, rngs: nnx.Rngs):
        bound = hidden**-0.5
        self.w_input = nnx.Param(_uniform(rngs.params(), (inputs, 4 * hidden), bound))
        self.w_hidden = nnx.Param(_uniform(rngs.params(), (hidden, 4 * hidden), bound))
        self.bias = nnx.Param(_uniform(rngs.params(), (4 * hidden,), bound))

    def __call__(self, x: jax.Array, w_hidden: jax.Array) -> jax.Array:
        """Hidden states [B, L, H] of inputs x [B, L, E] read left to right, with the
        (possibly dropped) hidden-to-hidden weights `w_hidden`."""
        gates_in = x @ self.w_input[...] + self.bias[...]
        hidden = w_hidden.shape[0]
        zeros = jnp.zeros((x.shape[0], hidden), x.dtype)

        def cell(carry, gate_in):
            h, c = carry
            i, f, g, o = jnp.split(gate_in + h @ w_hidden, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        _, states = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(gates_in, 0, 1))
        return jnp.swapaxes(states, 0, 1)


class LSTMRegClassifier(nnx.Module):
    """LSTM_reg over right-padded rows; called like the Transformer classifiers (ids,
    positions, mask, token types), the real tokens read from the mask's segment ids."""

    def __init__(self, cfg: LSTMConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        shape = (cfg.vocab_size, cfg.embedding_size)
        self.embeddings = nnx.Param(_uniform(rngs.params(), shape, 0.25))
        self.forward_lstm = LSTMLayer(cfg.embedding_size, cfg.hidden_size, rngs=rngs)
        self.backward_lstm = LSTMLayer(cfg.embedding_size, cfg.hidden_size, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.classifier = nnx.Linear(2 * cfg.hidden_size, num_labels, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array,
        attention: AttentionMask,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Logits [B, num_labels]."""
        del positions, token_type_ids  # an LSTM reads order from the sequence itself
        train = not deterministic and rngs is not None
        real = attention.q_segment_ids != 0
        x = self._embed(input_ids, rngs if train else None)
        w_forward, w_backward = (
            self._dropped(layer.w_hidden[...], rngs if train else None)
            for layer in (self.forward_lstm, self.backward_lstm)
        )
        order = _reversal(real)  # each row's real tokens read right to left
        ahead = self.forward_lstm(x, w_forward)
        back = jnp.take_along_axis(
            self.backward_lstm(jnp.take_along_axis(x, order[..., None], 1), w_backward),
            order[..., None],
            1,
        )
        states = jax.nn.relu(jnp.concatenate([ahead, back], axis=-1))
        pooled = jnp.where(real[..., None], states, -jnp.inf).max(axis=1)
        pooled = jnp.where(jnp.isfinite(pooled), pooled, 0.0)  # rows with no token
        pooled = self.dropout(pooled, deterministic=not train, rngs=rngs)
        return self.classifier(pooled)

    def _embed(self, input_ids: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        """Embedding dropout: with rate p each vocabulary row is dropped (for the whole
        batch) and the others scaled by 1 / (1 - p)."""
        table, p = self.embeddings[...], self.cfg.embedding_dropout
        if rngs is not None and p > 0:
            keep = jax.random.bernoulli(rngs.dropout(), 1 - p, (table.shape[0], 1))
            table = table * keep / (1 - p)
        return table[input_ids]

    def _dropped(self, weights: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        """Weight dropping: each hidden-to-hidden weight dropped with the configured rate
        (one mask for every step and row of the batch), the rest scaled up."""
        p = self.cfg.weight_drop
        if rngs is None or p == 0:
            return weights
        keep = jax.random.bernoulli(rngs.dropout(), 1 - p, weights.shape)
        return weights * keep / (1 - p)


def _reversal(real: jax.Array) -> jax.Array:
    """Indices [B, L] that reverse each row's real prefix and leave its padding in place
    (an involution: applying it twice restores the order)."""
    length = real.sum(-1, keepdims=True)
    t = jnp.arange(real.shape[-1])
    return jnp.where(t < length, length - 1 - t, t)
