"""The pretraining loop: data, mesh, jitted sharded steps, evaluation, checkpoints, metrics.

Reliability: SIGTERM (a preempted VM) saves a checkpoint at the current step and returns; a
non-finite loss or gradient stops the run before any checkpoint holds it, so the last good
checkpoint stays the latest; multi-host runs agree on the preemption step through JAX's
preemption sync point.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from lm_jax import objectives
from lm_jax.config import components, validate
from lm_jax.data.pipeline import (
    TOKENIZER_FILE,
    batch_iterator,
    build_pretraining_data,
    eval_batches,
    train_batches,
)
from lm_jax.errors import ConfigError, TrainingDivergedError
from lm_jax.models import TransformerConfig
from lm_jax.sharding import batch_split, global_batch, make_mesh
from lm_jax.train.checkpoint import Checkpointer, check_run_config, checkpoint_steps
from lm_jax.train.losses import summarize, unigram_cross_entropy
from lm_jax.train.metrics import MetricsWriter, peak_flops, plot_loss_curve, read_metrics
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.step import (
    INIT_STREAM,
    MIXTURE_STREAM,
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
    stream_key,
)
from lm_jax.train.tasks import TASKS

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """Where a run's outputs are, how its held-out loss moved, and its final state."""

    workdir: Path
    checkpoint_dir: Path
    metrics_path: Path
    plot_path: Path
    tokenizer_path: Path | None
    final_step: int
    first_eval_loss: float
    last_eval_loss: float
    unigram_baseline: float
    state: TrainState
    interrupted: bool  # stopped early by SIGTERM, with a checkpoint at final_step


def default_workdir(config: ml_collections.ConfigDict) -> Path:
    return Path(config.output_dir or f"runs/{config.objective}")


def build_model(config: ml_collections.ConfigDict, vocab_size: int) -> nnx.Module:
    """The objectives' model (`lm_jax.train.tasks.TASKS`; a mixture's objectives share one),
    initialised from the run's seed."""
    model_cfg = TransformerConfig(vocab_size=vocab_size, **config.model.to_dict())
    init_key = stream_key(config.seed, INIT_STREAM)
    objective = components(config)[0].objective
    return TASKS[objective].build(model_cfg, nnx.Rngs(params=init_key))


def choose_component(seed: int, step: int, weights: Sequence[float]) -> int:
    """Index of the mixture component trained at `step`: drawn with probability proportional
    to `weights`, from (seed, step) only, so a resumed run draws the same sequence."""
    if len(weights) == 1:
        return 0
    p = np.asarray(weights, np.float64) / sum(weights)
    return int(np.random.default_rng([seed, MIXTURE_STREAM, step]).choice(len(p), p=p))


def summarize_components(sums: dict[str, dict]) -> dict[str, float]:
    """Metrics of one objective, or of a mixture: the loss and accuracy pooled over every
    component's main-head predictions, then `<component>/<metric>` for each of them."""
    if len(sums) == 1:
        return summarize(next(iter(sums.values())))
    keys = ("nll_sum", "correct_sum", "weight_sum")
    out = summarize({k: sum(float(s[k]) for s in sums.values()) for k in keys})
    for name, component_sums in sums.items():
        out.update({f"{name}/{k}": v for k, v in summarize(component_sums).items()})
    return out


def model_flops(eval_step, params, rows) -> float:
    """Model FLOPs of one train step: 3x the forward pass (forward + backward, Kaplan et al.
    2020), as XLA counts it on the lowered eval step (same batch; no dropout, no remat)."""
    cost = eval_step.lower(params, rows, np.int32(0)).cost_analysis() or {}
    return 3 * float(cost.get("flops", 0.0))


def _add(total: dict | None, sums: dict) -> dict:
    return sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)


def evaluate(eval_steps: dict, params, batches) -> dict[str, float]:
    """Every objective of the run on the same held-out batches (fixed masks per batch)."""
    sums = {}
    for name, eval_step in eval_steps.items():
        for i, rows in enumerate(batches):
            sums[name] = _add(sums.get(name), eval_step(params, rows, np.int32(i)))
    return summarize_components(sums)


def initialize_distributed(d: ml_collections.ConfigDict) -> None:
    """`jax.distributed.initialize` from config.distributed (auto-detection where unset)."""
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(
        coordinator_address=d.coordinator_address or None,
        num_processes=d.num_processes or None,
        process_id=None if d.process_id < 0 else d.process_id,
    )


class _TerminationRequest:
    """Set by SIGTERM; in multi-process runs, every process stops at the same step."""

    def __init__(self):
        self._requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave the process's handler alone
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        self._requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_finite(sums: dict, first: int, last: int, checkpointer: Checkpointer) -> None:
    """Raise `TrainingDivergedError` when a loss or gradient of steps first..last is not finite
    (`sums`: per component, accumulated since step `first`)."""
    watched = [
        v
        for component in sums.values()
        for k, v in component.items()
        if k.endswith("nll_sum") or k == "grad_norm"
    ]
    if all(np.isfinite(float(v)) for v in watched):
        return
    good = checkpointer.latest_step()
    kept = f"the last good checkpoint, step {good}, is intact" if good else "no checkpoint exists"
    raise TrainingDivergedError(
        f"non-finite loss or gradient between steps {first} and {last}; the run stopped without "
        f"saving ({kept} in {checkpointer.directory}). Lower config.train.learning_rate or "
        "raise config.train.warmup_steps, and resume or start a new config.output_dir."
    )


def pretrain(
    config: ml_collections.ConfigDict, workdir: Path | None = None, progress: bool = True
) -> RunSummary:
    """Pretrain (or resume) the configured run; returns where its outputs went."""
    validate(config)
    if config.distributed.initialize:
        initialize_distributed(config.distributed)
    main_process = jax.process_index() == 0
    workdir = Path(workdir or default_workdir(config))
    resuming = bool(checkpoint_steps(workdir / "checkpoints"))
    check_run_config(workdir, config.to_dict(), resuming, write=main_process)
    rows = TASKS[components(config)[0].objective].rows
    data = build_pretraining_data(config, workdir, reuse_tokenizer=resuming, rows=rows)
    vocab = data.tokenizer.vocab
    t = config.train
    log.info(
        "corpus: %d train / %d held-out documents -> %d / %d rows of %d tokens",
        *data.num_documents,
        len(data.train),
        len(data.eval),
        config.data.seq_len,
    )

    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    if t.batch_size % batch_split(mesh):
        raise ConfigError(
            f"config.train.batch_size ({t.batch_size}) must be divisible by the mesh's "
            f"data x fsdp = {batch_split(mesh)} ways"
        )
    log.info("mesh %s over %d device(s)", dict(mesh.shape), mesh.size)
    optimizer, schedule = make_optimizer(t)
    graphdef, state, state_sharding = init_train_state(
        functools.partial(build_model, config, vocab.size), optimizer, mesh
    )
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    batches = batch_iterator(train_batches(data.train, t.batch_size, config.seed, **shard))
    checkpointer = Checkpointer(
        workdir / "checkpoints", keep=t.keep_checkpoints, config=config.to_dict()
    )
    start = checkpointer.latest_step() or 0
    if start:
        try:
            state = checkpointer.restore(start, state, batches)
        except BaseException:
            checkpointer.close()
            raise
        log.info("resumed from %s at step %d", checkpointer.directory / str(start), start)

    train_steps, eval_steps = {}, {}
    for c in components(config):
        objective = functools.partial(objectives.get(c.objective), vocab=vocab, **c.options)
        task = TASKS[c.objective]
        train_steps[c.name] = make_train_step(
            graphdef, optimizer, objective, config.seed, task, mesh, state_sharding
        )
        eval_steps[c.name] = make_eval_step(
            graphdef, objective, config.seed, task, mesh, state_sharding.params
        )
    names, weights = zip(*((c.name, c.weight) for c in components(config)))
    held_out = [
        global_batch(b, mesh)
        for b in eval_batches(data.eval, t.batch_size, t.eval_batches, **shard)
    ]
    metrics = (
        MetricsWriter(
            workdir / "metrics.jsonl",
            drop_after=start if start else -1,
            tensorboard_dir=workdir / "tensorboard",
        )
        if main_process
        else None
    )

    evaluations: list[dict] = []

    def record(step: int, split: str, values: dict) -> None:
        if split == "eval":
            evaluations.append({"step": step, "split": split, **values})
        if metrics is not None:
            metrics.write(step, split, values)

    with jax.set_mesh(mesh):
        step_flops = {n: model_flops(f, state.params, held_out[0]) for n, f in eval_steps.items()}
    peak, peak_source = peak_flops()
    log.info("model FLOPs per step %s; MFU against %.3g FLOP/s (%s)", step_flops, peak, peak_source)

    interrupted = False
    with jax.set_mesh(mesh), _TerminationRequest() as termination:
        try:
            if start == 0:
                record(0, "eval", evaluate(eval_steps, state.params, held_out))
            sums, tick, first = {}, time.perf_counter(), start + 1
            bar = tqdm(
                range(start, t.steps),
                initial=start,
                total=t.steps,
                disable=not progress or not main_process,
                desc=f"pretrain {'+'.join(names)}",
                unit="step",
                dynamic_ncols=True,
            )
            for step in bar:
                name = names[choose_component(config.seed, step, weights)]
                state, out = train_steps[name](state, global_batch(next(batches), mesh))
                sums[name] = _add(sums.get(name), out)
                done = step + 1
                if done % t.log_every == 0 or done == t.steps:
                    _check_finite(sums, first, done, checkpointer)
                    elapsed = time.perf_counter() - tick
                    steps = {n: float(s["steps"]) for n, s in sums.items()}
                    flops = sum(step_flops[n] * k for n, k in steps.items())
                    result = summarize_components(sums)
                    result.update(
                        grad_norm=sum(float(s["grad_norm"]) for s in sums.values())
                        / sum(steps.values()),
                        learning_rate=float(schedule(done)),
                        tokens_per_second=sum(float(s["tokens"]) for s in sums.values()) / elapsed,
                        model_flops_per_second=flops / elapsed,
                        mfu=flops / elapsed / peak,
                    )
                    record(done, "train", result)
                    bar.set_postfix(loss=f"{result['loss']:.3f}", acc=f"{result['accuracy']:.3f}")
                    sums, tick, first = {}, time.perf_counter(), done + 1
                if done % t.eval_every == 0 or done == t.steps:
                    record(done, "eval", evaluate(eval_steps, state.params, held_out))
                stop = termination.reached(done)
                if done % t.checkpoint_every == 0 or done == t.steps or stop:
                    _check_finite(sums, first, done, checkpointer)
                    checkpointer.save(done, state, batches)
                if stop and done < t.steps:
                    log.warning("SIGTERM: saved step %d; rerun the same command to resume", done)
                    interrupted, start = True, done
                    break
            bar.close()
        finally:
            checkpointer.close()
            if metrics is not None:
                metrics.close()

    final_step = start if interrupted else max(start, t.steps)
    plot_path = workdir / "loss.png"
    if main_process:
        plot_loss_curve(
            workdir / "metrics.jsonl",
            plot_path,
            title=f"{'+'.join(names)} on {config.data.corpus}",
        )
    # Process 0 holds the whole history (a resumed run's earlier evaluations included).
    records = read_metrics(workdir / "metrics.jsonl") if main_process else evaluations
    evals = sorted((r for r in records if r["split"] == "eval"), key=lambda r: r["step"])
    tokenizer_path = None if config.tokenizer.path else workdir / TOKENIZER_FILE
    return RunSummary(
        workdir=workdir,
        checkpoint_dir=checkpointer.directory,
        metrics_path=workdir / "metrics.jsonl",
        plot_path=plot_path,
        tokenizer_path=tokenizer_path,
        final_step=final_step,
        first_eval_loss=evals[0]["loss"],
        last_eval_loss=evals[-1]["loss"],
        unigram_baseline=unigram_cross_entropy(
            data.train.tokens, data.eval.tokens, vocab.size, vocab.special_ids
        ),
        state=state,
        interrupted=interrupted,
    )
