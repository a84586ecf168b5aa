"""The objective registry: one `ObjectiveSpec` per objective, and the helper that lifts
one-row objectives to batches.

A spec declares everything the rest of the library reads about an objective: its function,
its options (a dataclass with defaults and validation), the data features it reads, the row
layout it needs, and the model it trains. Config validation, the data pipeline and the train
step read the spec; nothing inspects signatures.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.errors import ConfigError, DataError
from lm_jax.layout import Rows
from lm_jax.objectives.options import NoOptions, Options

Objective = Callable[..., Any]


class Model(enum.Enum):
    """The model and losses an objective trains (built by `lm_jax.pretrain.tasks`)."""

    MASKED_LM = "masked_lm"  # encoder + LM head on the sparse slots or on every position
    MPNET = "mpnet"  # encoder with relative buckets, LM head on the query stream
    SPAN_BOUNDARY = "span_boundary"  # encoder + LM head + SpanBERT's span-boundary head
    REPLACED_TOKEN = "replaced_token"  # ELECTRA's generator and discriminator
    TWO_STREAM = "two_stream"  # XLNet
    NEXT_SENTENCE = "next_sentence"  # encoder + LM head + a 2-way sentence head (NSP, SOP)
    SENTENCE_STRUCTURE = "sentence_structure"  # ... a 3-way sentence head (StructBERT)
    T5 = "t5"  # T5 encoder-decoder
    BART = "bart"  # BART encoder-decoder


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """One objective, declared once where it is defined (`register`).

    Attributes:
      name: its registry name.
      function: the implementation, `function(key, tokens, *, vocab, segment_ids, [options],
        **inputs)`; `options` is passed when the options class has fields.
      options: its options dataclass (defaults and validation).
      model: the model and losses it trains.
      rows: the row layout it reads.
      inputs: the data arrays it accepts besides `tokens` and `segment_ids` (the train step
        passes those the rows hold).
    """

    name: str
    function: Objective
    options: type[Options]
    model: Model
    rows: Rows
    inputs: tuple[str, ...]

    def make_options(self, values: dict[str, Any]) -> Options:
        """The options from keyword values; an unknown name raises `ConfigError` listing them."""
        unknown = sorted(set(values) - set(self.options.names()))
        if unknown:
            raise ConfigError(
                f"{unknown} not an option of objective {self.name!r}; it accepts "
                f"{self.options.names()}"
            )
        return self.options(**values)


_REGISTRY: dict[str, ObjectiveSpec] = {}
_CHECKED: dict[str, Objective] = {}


# Data arguments that hold integer ids, and those that hold flags (bool, or 0/1 integers).
_ID_ARRAYS = ("segment_ids", "word_ids", "entity_ids", "language_ids", "prefix_lengths")
_FLAG_ARRAYS = ("word_starts", "sentence_starts")


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_inputs(name: str, tokens, vocab, arrays: dict[str, Any]) -> None:
    """Reject what an objective cannot use, at its boundary (outside jit, where dtypes and
    shapes are known; values when the arrays are concrete): a vocabulary with no regular ids,
    token ids outside [0, vocab.size), non-integer ids, negative segment ids."""
    if not len(vocab.regular_ids()):
        raise DataError(f"{name}: the vocabulary ({vocab.size} ids) has no regular, non-special id")
    if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
        raise DataError(f"{name}: tokens must be integer ids, got dtype {jnp.result_type(tokens)}")
    if _concrete(tokens) and np.size(tokens):
        host = np.asarray(tokens)  # on the host: jnp here would be staged into a caller's jit
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= vocab.size:
            raise DataError(
                f"{name}: token ids must lie in [0, {vocab.size}) (the vocabulary's size), "
                f"got ids from {low} to {high}"
            )
    for field, value in arrays.items():
        if value is None or field not in _ID_ARRAYS + _FLAG_ARRAYS:
            continue
        dtype = jnp.result_type(value)
        flags = field in _FLAG_ARRAYS and dtype == jnp.bool_
        if not flags and not jnp.issubdtype(dtype, jnp.integer):
            kind = "bool or integer flags" if field in _FLAG_ARRAYS else "integer ids"
            raise DataError(f"{name}: {field} must be {kind}, got dtype {dtype}")
        if field in _ID_ARRAYS and _concrete(value) and np.size(value):
            low = int(np.asarray(value).min())
            if low < 0:
                raise DataError(f"{name}: {field} must be >= 0, got {low}")


def register(
    name: str,
    *,
    model: Model,
    options: type[Options] = NoOptions,
    rows: Rows = Rows.PACKED,
    inputs: tuple[str, ...] = (),
) -> Callable[[Objective], Objective]:
    """Declare the decorated function as objective `name` (see `ObjectiveSpec`).

    The registered callable is `objective(key, tokens, *, vocab, segment_ids=None, **kwargs)`:
    keyword arguments named in `inputs` are data arrays, the rest are options; it checks its
    inputs (`check_inputs`) and options before calling the function."""

    def wrap(fn: Objective) -> Objective:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} is registered twice")
        spec = ObjectiveSpec(name, fn, options, model, rows, tuple(inputs))
        takes_options = bool(options.names())

        @functools.wraps(fn)
        def checked(key, tokens, *, vocab, segment_ids=None, **kwargs):
            arrays = {k: kwargs.pop(k) for k in spec.inputs if k in kwargs}
            made = spec.make_options(kwargs)
            check_inputs(name, tokens, vocab, {"segment_ids": segment_ids, **arrays})
            extra = {"options": made} if takes_options else {}
            return fn(key, tokens, vocab=vocab, segment_ids=segment_ids, **extra, **arrays)

        _REGISTRY[name], _CHECKED[name] = spec, checked
        return checked

    return wrap


def names() -> list[str]:
    """Names of every registered objective, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> ObjectiveSpec:
    """The declaration of objective `name`; an unknown name raises `ConfigError` listing them."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown objective {name!r}; choose from {names()}") from None


def get(name: str) -> Objective:
    """The objective registered as `name` (checked inputs and options; see `register`)."""
    spec(name)
    return _CHECKED[name]


def map_rows(
    row_fn: Callable[..., Any],
    key: jax.Array,
    tokens: jnp.ndarray,
    arrays: dict[str, jnp.ndarray | None],
    **static: Any,
) -> Any:
    """Apply `row_fn(key, tokens[L], **arrays_row, **static)` to every row of `tokens`.

    `tokens` is [..., L]; each entry of `arrays` must have the same shape (None entries pass
    through unchanged). Rows get independent keys split from `key`; a single row uses `key`.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim == 0 or tokens.shape[-1] == 0:
        raise ValueError(f"tokens must be [..., length] with length >= 1, got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    given = {}
    for name, value in arrays.items():
        if value is None:
            static[name] = None
            continue
        value = jnp.asarray(value)
        if value.shape != tokens.shape:
            raise ValueError(f"{name} has shape {value.shape}; it must match tokens {tokens.shape}")
        given[name] = value
    lead, length = tokens.shape[:-1], tokens.shape[-1]
    if not lead:
        return row_fn(key, tokens, **given, **static)
    n = math.prod(lead)
    keys = jax.random.split(key, n)
    flat = {k: v.reshape(n, length) for k, v in given.items()}
    out = jax.vmap(lambda k, t, a: row_fn(k, t, **a, **static))(
        keys, tokens.reshape(n, length), flat
    )
    return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), out)
