"""Command line: pretrain a model with a chosen objective, then print where results went.

    python -m lm_jax.pretrain [--config=configs/pretrain.py] [--config.FIELD=VALUE ...]

Examples:
    python -m lm_jax.pretrain --config.objective=mlm --config.train.steps=2000
    python -m lm_jax.pretrain --config.data.corpus=text --config.data.path=my_corpus/
A run directory that already holds checkpoints is resumed from the latest one.
Bad input (unknown field, invalid value, missing or empty corpus, mismatched checkpoint) prints
`lm_jax: error: ...` and exits with status 2, leaving existing outputs untouched.
"""

from __future__ import annotations

import difflib
import logging
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from lm_jax import objectives
from lm_jax.config_tools import flatten
from lm_jax.errors import ConfigError, LmJaxError
from lm_jax.pretrain.schema import objective_options, pretraining_config
from lm_jax.pretrain.tasks import check_setting_names

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pretrain.py"


def _parse_config(argv: list[str]):
    """Define --config (config_flags reads the overrides while defining it) and parse argv."""
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file(
            "config", str(DEFAULT_CONFIG), "Pretraining configuration file (get_config())."
        )
    rest = flags.FLAGS(argv)
    config = flags.FLAGS.config
    config.to_dict()  # a config file that failed to load raises here, not at first use
    return config, rest


def _explain_flag_error(argv: list[str], error: Exception) -> str:
    """Name the offending --config.FIELD when an override does not exist."""
    fields = flatten(pretraining_config().to_dict())
    for arg in argv[1:]:
        if arg.startswith("--config.objective_options.") and "=" in arg:
            option = arg[len("--config.objective_options.") :].split("=", 1)[0]
            foreign = _foreign_option(argv, option)
            if foreign:
                return foreign
        if arg.startswith("--config.model_options.") and "=" in arg:
            setting = arg[len("--config.model_options.") :].split("=", 1)[0]
            objective = _objective_of(argv)
            if objective in objectives.names():
                try:
                    check_setting_names(objective, [setting])
                except ConfigError as e:
                    return f"config.model_options.{e}"
        if arg.startswith("--config.") and "=" in arg:
            name = arg[len("--config.") :].split("=", 1)[0]
            free = ("objective_options.", "mixture.", "model_options.")
            if name not in fields and not name.startswith(free):
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean config.{close[0]}?)" if close else ""
                return f"unknown config field config.{name}{hint}"
    cause = error.__cause__ or error
    return f"invalid command line: {' '.join(str(cause).split())}"


def _objective_of(argv: list[str]) -> str:
    """The objective a command line asks for: --config.objective=NAME, else the config file's
    argument (configs/pretrain.py:NAME), else the default file's (mlm)."""
    chosen = "mlm"
    for arg in argv[1:]:
        if arg.startswith("--config=") and ":" in arg:
            chosen = arg.rsplit(":", 1)[1]
        if arg.startswith("--config.objective="):
            return arg.split("=", 1)[1]
    return chosen


def _foreign_option(argv: list[str], option: str) -> str | None:
    """An objective option the run's objective does not have: say whose it is (None: the
    objective has it)."""

    objective = _objective_of(argv)
    if objective not in objectives.names():
        return f"unknown objective {objective!r}; choose from {objectives.names()}"
    if option in objective_options(objective):
        return None
    owners = [n for n in objectives.names() if option in objective_options(n)]
    whose = f"it is an option of {owners}" if owners else "no objective has it"
    return (
        f"config.objective_options.{option} is not an option of objective {objective!r} "
        f"({whose}; choose the objective with --config=configs/pretrain.py:NAME); "
        f"{objective!r} accepts {sorted(objective_options(objective))}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        config, rest = _parse_config(argv)
    except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as e:
        print(f"lm_jax: error: {_explain_flag_error(argv, e)}", file=sys.stderr)
        return 2
    if len(rest) > 1:
        print(f"lm_jax: error: unexpected arguments {rest[1:]}", file=sys.stderr)
        return 2
    # force: a library imported above may have given the root logger a handler already.
    logging.basicConfig(level=logging.INFO, format="[lm_jax] %(message)s", force=True)
    # A failed checkpoint save is reported by lm_jax's own error; orbax's background threads
    # and their asyncio tasks would log the same failure again, with tracebacks, many times.
    for quiet in ("orbax", "asyncio"):
        logging.getLogger(quiet).setLevel(logging.CRITICAL)
    for noisy in (
        "absl",
        "jax",
        "gensim",
        "smart_open",
        "tensorflow_datasets",
        "matplotlib",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from lm_jax.pretrain.run import pretrain

    try:
        summary = pretrain(config)
    except LmJaxError as e:
        print(f"lm_jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system failure no check foresaw (full disk, I/O error)
        print(f"lm_jax: error: {e}; the checkpoints already saved are intact", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "lm_jax: interrupted; the checkpoints already saved are intact (rerun the same "
            "command to resume from the latest)",
            file=sys.stderr,
        )
        return 130
    if summary.interrupted:
        print(
            f"\nStopped by {summary.signal} at step {summary.final_step} with a checkpoint "
            "there; run the same command again to resume."
        )
    elif not summary.trained_steps:
        print(
            f"\nNothing to train: the run is at step {summary.final_step}, config.train.steps "
            f"is {config.train.steps}; raise it to continue."
        )
    print(
        f"\nPretrained {config.objective!r} to step {summary.final_step}; held-out loss "
        f"{summary.first_eval_loss:.3f} -> {summary.last_eval_loss:.3f} (step 0 -> last; "
        f"a context-free unigram model scores {summary.unigram_baseline:.3f})."
    )
    print(f"  run directory : {summary.workdir.absolute()}")
    print(f"  checkpoints   : {summary.checkpoint_dir.absolute()}")
    print(f"  metrics       : {summary.metrics_path.absolute()}")
    if summary.plot_path:
        print(f"  loss curve    : {summary.plot_path.absolute()}")
    print(f"  tensorboard   : {(summary.workdir / 'tensorboard').absolute()}")
    if summary.tokenizer_path:
        print(f"  tokenizer     : {summary.tokenizer_path.absolute()}")
    return 0
