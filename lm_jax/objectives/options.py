"""Objective options: each objective declares them as a frozen dataclass of `Options`, whose
fields are checked against the rules below when it is made (by a call or by config validation),
before any work is done; a NaN rate fails here rather than passing a check written the other
way round. Rules are keyed by option name: the objectives share their names.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from lm_jax.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]


def _open_fraction(x) -> bool:
    return 0 < x < 1


def _probability(x) -> bool:
    return 0 <= x <= 1


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda x: x >= low


def _one_of(*choices) -> Rule:
    return (lambda x: x in choices, f"must be one of {list(choices)}")


def _weights(length: int | None = None) -> Rule:
    def ok(x) -> bool:
        values = list(x) if isinstance(x, (list, tuple)) else []
        fits = length is None or len(values) == length
        numbers = all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values)
        return bool(values) and fits and numbers and sum(values) > 0

    size = f"{length} " if length else ""
    return ok, f"must be a list of {size}finite non-negative weights with a positive sum"


OPTION_RULES: dict[str, Rule] = {
    **{
        name: (_open_fraction, "must be in (0, 1)")
        for name in ("rate", "noise_density", "trigram_rate", "fragment_ratio")
    },
    **{
        name: (_probability, "must be in [0, 1]")
        for name in (
            "mask_prob",
            "mask_ratio",  # 0: no span masking (fairseq allows it)
            "random_prob",
            "short_seq_prob",
            "insert_ratio",
            "permute_sentence_ratio",
            "random_ratio",
            "rotate_ratio",
        )
    },
    "geometric_p": (lambda x: 0 < x <= 1, "must be in (0, 1]"),
    "poisson_lambda": (lambda x: x > 0, "must be > 0"),
    "mean_noise_span_length": (_at_least(1), "must be >= 1"),
    "partial_prediction": (_at_least(1), "must be >= 1"),
    **{
        name: (_at_least(1), "must be >= 1")
        for name in ("max_predictions", "inputs_length", "max_pair_targets", "max_span_length")
    },
    "full_stop_id": (_at_least(0), "must be a token id >= 0"),
    "replace_length": _one_of(-1, 0, 1),
    "budget": _one_of("round", "probabilistic"),
    "span_lengths": _one_of("poisson", "word"),
    "target_selection": _one_of("plain", "span"),
    "mode": _one_of("bidirectional", "left_to_right", "right_to_left", "seq2seq"),
    "ngram_probs": _weights(),
    "mixture": _weights(4),
}


def option_problem(name: str, value: Any, options: dict[str, Any]) -> str | None:
    """Why `value` is not allowed for option `name` (None: it is), given all the options."""
    if value is None:
        return None  # an unset placeholder: the objective's own default applies
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    rule = OPTION_RULES.get(name)
    if rule is not None and not rule[0](value):
        return f"{rule[1]}, got {value!r}"
    if name == "random_prob" and options.get("mask_prob") is not None:
        if options["mask_prob"] + value > 1:
            return f"plus mask_prob ({options['mask_prob']}) must be at most 1, got {value!r}"
    return None


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every objective's options; an invalid value raises `ConfigError` naming it."""

    def __post_init__(self) -> None:
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if isinstance(value, list):  # ml_collections and JSON give lists
                object.__setattr__(self, name, tuple(value))
            problem = option_problem(name, value, values)
            if problem:
                raise ConfigError(f"{name} {problem}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def value_types(cls) -> dict[str, type]:
        """Each option's value type (`int` for `int | None`), for typed config placeholders."""
        hints = typing.get_type_hints(cls)
        out = {}
        for name in cls.names():
            hint = hints[name]
            if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            out[name] = typing.get_origin(hint) or hint
        return out


@dataclasses.dataclass(frozen=True)
class NoOptions(Options):
    """Options of an objective that has none (clm, prefix_lm)."""
