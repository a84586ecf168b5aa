"""Command line: fine-tune on a labelled task, then print where results went.

    python -m lm_jax.finetune --config=configs/finetune/sst2.py [--config.FIELD=VALUE ...]

Examples:
    python -m lm_jax.finetune --config=configs/finetune/sst2.py --config.init=runs/mlm
    python -m lm_jax.finetune --config=configs/finetune/rte.py --config.init=path/to/hf_folder
    python -m lm_jax.finetune --config=configs/finetune/stsb.py --config.seeds=(1,2,3)
A run directory that already holds checkpoints is resumed from the latest one. Bad input
(unknown field, invalid value, missing column, unknown label, unsupported weights) prints
`lm_jax: error: ...` and exits with status 2, leaving existing outputs untouched.
"""

from __future__ import annotations

import difflib
import logging
import sys

from absl import flags
from ml_collections import config_flags

from lm_jax.config_tools import flatten
from lm_jax.errors import LmJaxError
from lm_jax.finetune.schema import finetuning_config


def _parse_config(argv: list[str]):
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Fine-tuning configuration file.")
    rest = flags.FLAGS(argv)
    config = flags.FLAGS.config
    if config is None:
        raise ValueError("--config=configs/finetune/<task>.py is required")
    config.to_dict()  # a config file that failed to load raises here, not at first use
    return config, rest


def _explain_flag_error(argv: list[str], error: Exception) -> str:
    fields = flatten(finetuning_config().to_dict())
    for arg in argv[1:]:
        if arg.startswith("--config.") and "=" in arg:
            name = arg[len("--config.") :].split("=", 1)[0]
            if name not in fields:
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean config.{close[0]}?)" if close else ""
                return f"unknown config field config.{name}{hint}"
    cause = error.__cause__ or error
    return f"invalid command line: {' '.join(str(cause).split())}"


def _quiet_libraries() -> None:
    logging.basicConfig(level=logging.INFO, format="[lm_jax] %(message)s", force=True)
    for quiet in ("orbax", "asyncio"):
        logging.getLogger(quiet).setLevel(logging.CRITICAL)
    for noisy in ("absl", "jax", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_summary(config, summary) -> None:
    if isinstance(summary, dict):  # several seeds
        m = summary["metric"]
        stats = summary["mean_std"][m]
        for seed, metrics in summary["seeds"].items():
            print(f"  seed {seed}: dev {m} {metrics[m]:.4f} (step {metrics['step']})")
        print(
            f"\n{config.name}: dev {m} {stats['mean']:.4f} +- {stats['std']:.4f} over "
            f"{len(summary['seeds'])} seeds; best seed {summary['best_seed']}"
        )
        print(f"  summary          : {(default_dir(config) / 'seeds.json').absolute()}")
        return
    if summary.interrupted:
        print(
            f"\nStopped by {summary.signal} at step {summary.final_step} with a checkpoint "
            "there; run the same command again to resume."
        )
    best = summary.best
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k not in ("step", "loss"))
    print(
        f"\nFine-tuned {config.name!r} to step {summary.final_step}; best dev: {shown} "
        f"(step {best['step']})."
    )
    print(f"  run directory    : {summary.workdir.absolute()}")
    print(f"  eval results     : {summary.eval_results_path.absolute()}")
    print(f"  predictions      : {summary.predictions_path.absolute()}")
    print(f"  best model       : {summary.best_dir.absolute()}")
    print(f"  checkpoints      : {summary.checkpoint_dir.absolute()}")
    print(f"  metrics          : {summary.metrics_path.absolute()}")
    for name, path in summary.plots.items():
        print(f"  {name:<17}: {path.absolute()}")
    if summary.export_dir:
        print(f"  Hugging Face     : {summary.export_dir.absolute()}")


def default_dir(config):
    from lm_jax.finetune.run import default_workdir

    return default_workdir(config)


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
    _quiet_libraries()
    from lm_jax.finetune.run import finetune

    try:
        summary = finetune(config)
    except LmJaxError as e:
        print(f"lm_jax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"lm_jax: error: {e}; the checkpoints already saved are intact", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lm_jax: interrupted; the checkpoints already saved are intact", file=sys.stderr)
        return 130
    _print_summary(config, summary)
    return 0
