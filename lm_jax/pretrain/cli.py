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

import sys
from pathlib import Path

from lm_jax import objectives
from lm_jax.command_line import (
    FLAG_ERRORS,
    configure_logging,
    explain_flag_error,
    fail,
    parse_config,
    run_reporting_errors,
)
from lm_jax.config_tools import flatten
from lm_jax.errors import ConfigError
from lm_jax.pretrain.schema import objective_options, pretraining_config
from lm_jax.pretrain.tasks import check_setting_names

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pretrain.py"


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
    free = ("objective_options.", "mixture.", "model_options.")
    return explain_flag_error(argv, error, set(fields), free)


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
        config, rest = parse_config(argv, str(DEFAULT_CONFIG), "Pretraining configuration file.")
    except FLAG_ERRORS as e:
        return fail(_explain_flag_error(argv, e))
    if len(rest) > 1:
        return fail(f"unexpected arguments {rest[1:]}")
    configure_logging()
    from lm_jax.pretrain.run import pretrain

    status, summary = run_reporting_errors(lambda: pretrain(config))
    if status:
        return status
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
