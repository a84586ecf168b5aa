"""Fine-tuning runs: a labelled task read from files, an encoder with a new sequence head
(classification or regression), trained by the generic loop (`lm_jax.train.loop`: sharded
steps, checkpoints, exact resumption, SIGTERM), evaluated on the dev set with the benchmark's
metrics, the best evaluation's weights kept, then predictions, pictures and a Hugging Face
export written. The run directory is locked for the whole run (`RunDirectoryLock`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from lm_jax import runtime
from lm_jax.config_tools import flatten
from lm_jax.data.pipeline import batch_iterator, get_tokenizer, train_batches
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import ConfigError
from lm_jax.finetune.best import BestModel
from lm_jax.finetune.data import (
    REGRESSION,
    EncodedSplit,
    Examples,
    encode,
    label_ids,
    label_set,
    read_examples,
    split_off,
)
from lm_jax.finetune.evaluation import Evaluator, task_metrics
from lm_jax.finetune.export import export_model
from lm_jax.finetune.outputs import (
    confusion_matrix,
    plot_confusion,
    plot_dev_metric,
    seeds_summary,
    write_eval_results,
    write_predictions,
)
from lm_jax.finetune.schema import finetuning_config, resolve_schedule, validate
from lm_jax.finetune.tasks import layer_decay_factors, predict_logits, sequence_task
from lm_jax.finetune.weights import Initial, initial_weights, model_config
from lm_jax.models.encoder import EncoderForSequenceClassification
from lm_jax.train.checkpoint import check_run_config
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

log = logging.getLogger(__name__)
DEV_SPLIT_SEED = 0  # one held-out split for every seed of a task without a dev file


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A task's encoded splits, its dev texts (for the predictions file), its label names
    (empty for regression) and the tokenizer."""

    train: EncodedSplit
    dev: EncodedSplit
    dev_texts: list[str]
    labels: list[str]
    tokenizer: Tokenizer

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for split in (self.train, self.dev):
            for name in sorted(split.arrays):
                digest.update(name.encode() + split.arrays[name].tobytes())
        return digest.hexdigest()


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
    predictions_path: Path
    checkpoint_dir: Path
    best_dir: Path
    metrics_path: Path
    plots: dict[str, Path]  # name -> picture (dev metric, loss, confusion matrix)
    export_dir: Path | None  # the Hugging Face folder; None when the model does not export


def default_workdir(config: ml_collections.ConfigDict) -> Path:
    return Path(config.output_dir or f"runs/finetune/{config.name}")


def main_metric(config: ml_collections.ConfigDict) -> str:
    """The dev metric that picks the best model: accuracy, or Pearson's r for regression."""
    return "pearson" if config.task == REGRESSION else "accuracy"


def _read_splits(config: ml_collections.ConfigDict) -> tuple[Examples, Examples]:
    d = config.data
    read = functools.partial(
        read_examples,
        text_column=d.text_column,
        label_column=d.label_column,
        pair_column=d.text_pair_column,
        fmt=d.format,
        header=d.header,
    )
    train = read(d.train_path)
    if d.dev_path:
        dev = read(d.dev_path)
    else:
        train, dev = split_off(train, d.dev_fraction, DEV_SPLIT_SEED)
    if d.max_train_examples and d.max_train_examples < len(train):
        n = d.max_train_examples
        pairs = None if train.pairs is None else train.pairs[:n]
        train = Examples(train.texts[:n], pairs, train.labels[:n], train.source)
    return train, dev


def _tokenizer(config, initial: Initial, train: Examples, workdir: Path, resuming: bool):
    if initial.tokenizer is not None:
        return initial.tokenizer
    texts = train.texts + (train.pairs or [])
    return get_tokenizer(config.tokenizer, texts, workdir, reuse=resuming)


def build_model(
    config: ml_collections.ConfigDict, initial: Initial, vocab_size: int, num_labels: int
) -> EncoderForSequenceClassification:
    """The encoder (pretrained weights when `initial` has them) with a new head, initialised
    from the run's seed."""
    cfg = model_config(config, initial, vocab_size)
    usable = cfg.max_position - cfg.position_offset
    if config.data.max_seq_length > usable:
        raise ConfigError(
            f"config.data.max_seq_length ({config.data.max_seq_length}) exceeds the model's "
            f"{usable} positions"
        )
    rngs = nnx.Rngs(params=stream_key(config.seed, INIT_STREAM))
    model = EncoderForSequenceClassification(cfg, num_labels, rngs=rngs)
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
    train, dev = _read_splits(config)
    config = ml_collections.ConfigDict(config.to_dict())  # resolved below, caller's untouched
    resolve_schedule(config, len(train))
    defaults = flatten(finetuning_config().to_dict())
    resuming = prepare_run_directory(config, workdir, main_process, defaults)
    labels = [] if config.task == REGRESSION else label_set(train, config.data.labels)
    train_labels = label_ids(train, config.task, labels)
    dev_labels = label_ids(dev, config.task, labels)
    initial = initial_weights(config)
    tokenizer = _tokenizer(config, initial, train, workdir, resuming)
    max_len = config.data.max_seq_length
    data = TaskData(
        encode(train, train_labels, tokenizer, max_len),
        encode(dev, dev_labels, tokenizer, max_len),
        dev.texts if dev.pairs is None else [f"{a} ||| {b}" for a, b in zip(dev.texts, dev.pairs)],
        labels,
        tokenizer,
    )
    if not resuming and main_process:
        check_run_config(workdir, config.to_dict(), resuming=False)
    log.info(
        "%s: %d train / %d dev examples, %s; init: %s",
        config.name,
        len(data.train),
        len(data.dev),
        f"labels {labels}" if labels else "regression",
        initial.description,
    )
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
    num_labels = len(data.labels) or 1
    model = build_model(config, initial, data.tokenizer.vocab.size, num_labels)
    factors = None
    if config.layer_decay < 1:
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
    task = sequence_task(config.task)
    predict = make_predict_step(graphdef, predict_logits, mesh, state_sharding.params)
    best = BestModel(workdir / "best", main_metric(config), fresh=start == 0)
    evaluator = Evaluator(predict, mesh, data.dev, config, best)
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
    """The best model's dev predictions, eval_results.json, pictures and the export."""
    metric = main_metric(config)
    params = parts.best.params(result.state.params) if parts.best.step is not None else None
    params = result.state.params if params is None else params
    outputs = parts.predict.outputs(params, full=True)
    evaluations = _evaluations(workdir / "metrics.jsonl")
    plots, export_dir = {}, None
    if main_process:
        write_eval_results(workdir / "eval_results.json", config.name, metric, evaluations)
        labels = data.dev.arrays["labels"]
        write_predictions(workdir / "predictions.tsv", data.dev_texts, labels, outputs, data.labels)
        plots["dev metric"] = plot_dev_metric(
            workdir / "dev_metric.png", evaluations, metric, f"{config.name}: dev {metric}"
        )
        plots["loss"] = plot_loss_curve(
            workdir / "metrics.jsonl", workdir / "loss.png", config.name
        )
        if data.labels:
            counts = confusion_matrix(labels, outputs.argmax(-1), len(data.labels))
            plots["confusion matrix"] = plot_confusion(
                workdir / "confusion.png", counts, data.labels, f"{config.name}: dev (best model)"
            )
        model = nnx.merge(parts.graphdef, params)
        export_dir = export_model(model, workdir / "hf_model", config, data.labels, data.tokenizer)
    best = {
        "step": parts.best.step,
        **(parts.best.metrics or task_metrics(config, outputs, data.dev)),
    }
    return FinetuneSummary(
        workdir=workdir,
        metric=metric,
        best=best,
        final_step=result.final_step,
        trained_steps=result.final_step - loop.start,
        interrupted=result.signal is not None,
        signal=result.signal,
        eval_results_path=workdir / "eval_results.json",
        predictions_path=workdir / "predictions.tsv",
        checkpoint_dir=loop.checkpointer.directory,
        best_dir=parts.best.directory,
        metrics_path=workdir / "metrics.jsonl",
        plots={k: v for k, v in plots.items() if v is not None},
        export_dir=export_dir,
    )
