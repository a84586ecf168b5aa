"""Fine-tuning runs: a labelled task read from files, an encoder with a new sequence head
(classification or regression), trained by the generic loop (`lm_jax.train.loop`: sharded
steps, checkpoints, exact resumption, SIGTERM), evaluated on the dev set with the benchmark's
metrics, the best evaluation's weights kept, then predictions, pictures and a Hugging Face
export written. The run directory is locked for the whole run (`RunDirectoryLock`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from lm_jax import runtime
from lm_jax.config_tools import flatten
from lm_jax.data.pipeline import batch_iterator, train_batches
from lm_jax.errors import ConfigError
from lm_jax.finetune.best import BestModel
from lm_jax.finetune.data import QUESTION_ANSWERING
from lm_jax.finetune.evaluation import Evaluator
from lm_jax.finetune.outputs import seeds_summary, write_eval_results
from lm_jax.finetune.qa import QATaskData
from lm_jax.finetune.schema import finetuning_config, main_metric, resolve_schedule, validate
from lm_jax.finetune.sequence import SequenceTaskData
from lm_jax.finetune.task_data import TaskData
from lm_jax.finetune.tasks import layer_decay_factors
from lm_jax.finetune.text_to_text import QATextToTextTaskData, TextToTextTaskData
from lm_jax.finetune.weights import Initial, initial_weights, model_config
from lm_jax.models.config import TransformerConfig
from lm_jax.train.checkpoint import check_run_config, checkpoint_steps
from lm_jax.train.loop import (
    Loop,
    initialize_distributed,
    model_flops,
    open_checkpoints,
    prepare_run_directory,
    run_mesh,
    train_recorded,
)
from lm_jax.train.metrics import plot_loss_curve, read_metrics
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.run_directory import RunDirectoryLock
from lm_jax.train.step import (
    INIT_STREAM,
    make_eval_step,
    make_predict_step,
    make_train_step,
    place_train_state,
    stream_key,
)
from lm_jax.vocab import VocabInfo

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FinetuneSummary:
    """Where a fine-tuning run's outputs are, and its best dev evaluation."""

    workdir: Path
    metric: str
    best: dict  # the best evaluation: step and metrics
    final_step: int
    trained_steps: int
    interrupted: bool
    signal: str | None
    eval_results_path: Path
    files: dict[str, Path]  # name -> file: the dev predictions, pictures (the task's outputs)
    checkpoint_dir: Path
    best_dir: Path
    metrics_path: Path
    export_dir: Path | None  # the Hugging Face folder; None when the model does not export

    @property
    def predictions_path(self) -> Path:
        """predictions.tsv, or predictions.json (question answering)."""
        return self.files["predictions"]

    @property
    def plots(self) -> dict[str, Path]:
        return {k: v for k, v in self.files.items() if v.suffix == ".png"}


def default_workdir(config: ml_collections.ConfigDict) -> Path:
    return Path(config.output_dir or f"runs/finetune/{config.name}")


def load_task_data(config, initial: Initial, workdir: Path, resuming: bool) -> TaskData:
    """The task's data read, tokenized and encoded (the tokenizer trained first when none)."""
    if config.text_to_text.enabled:
        qa = config.task == QUESTION_ANSWERING
        kind = QATextToTextTaskData if qa else TextToTextTaskData
    else:
        kind = QATaskData if config.task == QUESTION_ANSWERING else SequenceTaskData
    return kind(config, initial, workdir, resuming)


def build_model(
    config: ml_collections.ConfigDict,
    initial: Initial,
    vocab: VocabInfo,
    with_head: Callable[[TransformerConfig, nnx.Rngs], nnx.Module],
) -> nnx.Module:
    """`with_head(cfg, rngs)`: the encoder with a task's new head (`TaskData.model`),
    initialised from the run's seed, the pretrained encoder's weights loaded when `initial`
    has them."""
    cfg = model_config(config, initial, vocab)
    usable = cfg.max_position - cfg.position_offset
    if config.data.max_seq_length > usable:
        raise ConfigError(
            f"config.data.max_seq_length ({config.data.max_seq_length}) exceeds the model's "
            f"{usable} positions"
        )
    model = with_head(cfg, nnx.Rngs(params=stream_key(config.seed, INIT_STREAM)))
    if initial.encoder is not None:
        nnx.update(model.encoder, initial.encoder)
    return model


def finetune(
    config: ml_collections.ConfigDict, workdir: Path | None = None, progress: bool = True
) -> FinetuneSummary | dict:
    """Fine-tune (or resume) the configured task; with `config.seeds`, one run per seed under
    `workdir/seed_<s>` and the summary of all of them (`seeds.json`)."""
    validate(config)
    runtime.prepare(config)  # before the first JAX computation
    if config.distributed.initialize:
        initialize_distributed(config.distributed)
    workdir = Path(workdir or default_workdir(config))
    if not config.seeds:
        return _finetune_one(config, workdir, progress)
    per_seed = {}
    for seed in config.seeds:
        one = ml_collections.ConfigDict(config.to_dict())
        one.seed, one.seeds = seed, ()
        summary = _finetune_one(one, workdir / f"seed_{seed}", progress)
        if summary.interrupted:
            return summary
        per_seed[seed] = {k: v for k, v in summary.best.items() if k != "split"}
    return seeds_summary(workdir / "seeds.json", main_metric(config), per_seed)


def _finetune_one(config, workdir: Path, progress: bool) -> FinetuneSummary:
    if jax.process_index() != 0:
        return _finetune_locked(config, workdir, progress)
    with RunDirectoryLock(workdir):
        return _finetune_locked(config, workdir, progress)


def _finetune_locked(config, workdir: Path, progress: bool) -> FinetuneSummary:
    main_process = jax.process_index() == 0
    config = ml_collections.ConfigDict(config.to_dict())  # resolved below, caller's untouched
    defaults = flatten(finetuning_config().to_dict())
    initial = initial_weights(config)
    # The tokenizer comes before the schedule (QA counts windows), so before the check of the
    # run's configuration; a resumed run reuses the tokenizer it wrote.
    resuming = bool(checkpoint_steps(workdir / "checkpoints"))
    data = load_task_data(config, initial, workdir, resuming)
    resolve_schedule(config, len(data.train))
    prepare_run_directory(config, workdir, main_process, defaults)
    if not resuming and main_process:
        check_run_config(workdir, config.to_dict(), resuming=False)
    log.info("%s: %s; init: %s", config.name, data.describe(), initial.description)
    loop, parts = _build_loop(config, workdir, data, initial, main_process)
    try:
        result, _ = train_recorded(
            loop,
            config.train,
            workdir,
            lambda step: "train",
            f"finetune {config.name}",
            progress,
            main_process,
        )
        return _finish(config, workdir, data, loop, parts, result, main_process)
    finally:
        loop.checkpointer.close()


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What the end of a run needs besides the loop: the predict step, the evaluator's best
    model, the model's graph and config."""

    graphdef: nnx.GraphDef
    predict: Evaluator
    best: BestModel


def _build_loop(config, workdir, data: TaskData, initial: Initial, main_process: bool):
    t = config.train
    mesh = run_mesh(config)
    model = build_model(config, initial, data.tokenizer.vocab, data.model)
    factors = None
    if config.layer_decay < 1:
        if initial.family == "bart":
            raise ConfigError(
                "config.layer_decay: layer-wise decay (ELECTRA's recipe) is defined for an "
                "encoder's layer stack; BART fine-tunes with config.layer_decay=1"
            )
        params = nnx.state(model, nnx.Param)
        factors = layer_decay_factors(params, model.encoder.cfg.num_layers, config.layer_decay)
    optimizer, schedule = make_optimizer(t, factors)
    graphdef, state, state_sharding = place_train_state(model, optimizer, mesh)
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    batches = batch_iterator(train_batches(data.train, t.batch_size, config.seed, **shard))
    fingerprint = data.fingerprint()
    checkpointer, state, start = open_checkpoints(
        config, workdir, state, batches, fingerprint, schedule, main_process
    )
    task = data.step_task
    predict = make_predict_step(graphdef, data.predict, mesh, state_sharding.params)
    best = BestModel(workdir / "best", data.metric, fresh=start == 0)
    evaluator = Evaluator(predict, mesh, data.dev, data.metrics, config, best)
    eval_step = make_eval_step(graphdef, task, config.seed, mesh, state_sharding.params)
    with jax.set_mesh(mesh):
        first = evaluator.global_rows(0)
        flops = model_flops(eval_step, state.params, first, np.int32(0))
    loop = Loop(
        mesh=mesh,
        state=state,
        schedule=schedule,
        train_steps={
            "train": make_train_step(graphdef, optimizer, task, config.seed, mesh, state_sharding)
        },
        evaluate=evaluator,
        batches=batches,
        checkpointer=checkpointer,
        start=start,
        fingerprint=fingerprint,
        step_flops={"train": flops},
        summarize=lambda sums: _train_summary(sums["train"]),
    )
    return loop, _Parts(graphdef, evaluator, best)


def _train_summary(sums: dict) -> dict[str, float]:
    weight = max(float(sums["weight_sum"]), 1.0)
    out = {"loss": float(sums["nll_sum"]) / weight}
    if "correct_sum" in sums:
        out["accuracy"] = float(sums["correct_sum"]) / weight
    return out


def _evaluations(metrics_path: Path) -> list[dict]:
    records = read_metrics(metrics_path) if metrics_path.exists() else []
    evals = [{k: v for k, v in r.items() if k != "split"} for r in records if r["split"] == "eval"]
    return sorted(evals, key=lambda r: r["step"])


def _finish(config, workdir, data: TaskData, loop, parts: _Parts, result, main_process):
    """The best model's dev predictions and pictures, eval_results.json and the export."""
    params = parts.best.params(result.state.params) if parts.best.step is not None else None
    params = result.state.params if params is None else params
    outputs = parts.predict.outputs_at(parts.best.step)
    if outputs is None:
        outputs = parts.predict.outputs(params, full=True)
    evaluations = _evaluations(workdir / "metrics.jsonl")
    files, export_dir = {}, None
    if main_process:
        write_eval_results(workdir / "eval_results.json", config.name, data.metric, evaluations)
        files = data.write_outputs(workdir, outputs, evaluations)
        loss_plot = workdir / "loss.png"
        files["loss"] = plot_loss_curve(workdir / "metrics.jsonl", loss_plot, config.name)
        model = nnx.merge(parts.graphdef, params)
        export_dir = data.export(model, workdir / "hf_model")
    best = {"step": parts.best.step, **(parts.best.metrics or data.metrics(outputs))}
    return FinetuneSummary(
        workdir=workdir,
        metric=data.metric,
        best=best,
        final_step=result.final_step,
        trained_steps=result.final_step - loop.start,
        interrupted=result.signal is not None,
        signal=result.signal,
        eval_results_path=workdir / "eval_results.json",
        files={k: v for k, v in files.items() if v is not None},
        checkpoint_dir=loop.checkpointer.directory,
        best_dir=parts.best.directory,
        metrics_path=workdir / "metrics.jsonl",
        export_dir=export_dir,
    )
