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

import sys

from lm_jax.command_line import (
    FLAG_ERRORS,
    configure_logging,
    explain_flag_error,
    fail,
    parse_config,
    run_reporting_errors,
)
from lm_jax.config_tools import flatten
from lm_jax.finetune.schema import finetuning_config


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
    shown = ", ".join(
        f"{k} {v:.4f}"
        for k, v in best.items()
        if k not in ("step", "loss") and not k.endswith("total")  # SQuAD's question counts
    )
    print(
        f"\nFine-tuned {config.name!r} to step {summary.final_step}; best dev: {shown} "
        f"(step {best['step']})."
    )
    print(f"  run directory    : {summary.workdir.absolute()}")
    print(f"  eval results     : {summary.eval_results_path.absolute()}")
    print(f"  best model       : {summary.best_dir.absolute()}")
    print(f"  checkpoints      : {summary.checkpoint_dir.absolute()}")
    print(f"  metrics          : {summary.metrics_path.absolute()}")
    for name, path in summary.files.items():
        print(f"  {name:<17}: {path.absolute()}")
    if summary.export_dir:
        print(f"  Hugging Face     : {summary.export_dir.absolute()}")


def default_dir(config):
    from lm_jax.finetune.run import default_workdir

    return default_workdir(config)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        config, rest = parse_config(argv, None, "Fine-tuning configuration file.")
    except FLAG_ERRORS as e:
        return fail(explain_flag_error(argv, e, set(flatten(finetuning_config().to_dict()))))
    if len(rest) > 1:
        return fail(f"unexpected arguments {rest[1:]}")
    configure_logging()
    from lm_jax.finetune.run import finetune

    status, summary = run_reporting_errors(lambda: finetune(config))
    if status:
        return status
    _print_summary(config, summary)
    return 0
