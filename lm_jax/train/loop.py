"""The training loop any run uses: jitted sharded steps over a stream of batches, periodic
evaluation, checkpoints, metrics, preemption and divergence handling.

Reliability: SIGTERM (a preempted VM) or SIGINT (Ctrl-C) saves a checkpoint at the current step
and returns; a non-finite loss or gradient stops the run before any checkpoint holds it, so the
last good checkpoint stays the latest; a resume verifies the checkpoint's checksums, step, data
position and data fingerprint; multi-host runs agree on the preemption step through JAX's
preemption sync point. The run's owner (`lm_jax.pretrain.run`) locks the run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm.auto import tqdm

from lm_jax.errors import CheckpointError, ConfigError, TrainingDivergedError
from lm_jax.sharding import batch_split, global_batch, make_mesh
from lm_jax.train.checkpoint import (
    RUN_CONFIG_FILE,
    Checkpointer,
    check_run_config,
    checkpoint_steps,
    restore_run_config,
)
from lm_jax.train.metrics import MetricsWriter, peak_flops
from lm_jax.train.optimizer import averaged_params, make_optimizer
from lm_jax.train.step import TrainState

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Loop:
    """What `run_loop` trains with.

    Attributes:
      mesh: the device mesh the steps are traced under.
      state: the (restored) train state.
      schedule: step -> learning rate, for the metrics.
      train_steps: name -> jitted `step(state, rows) -> (state, sums)` (several for a mixture).
      evaluate: (params, step) -> held-out metrics (the step lets a run keep its best model).
      batches: the training batch iterator (checkpointed with the state).
      checkpointer: where states are saved.
      start: the step the loop starts from (0: a fresh run).
      fingerprint: the training data's fingerprint, saved with each checkpoint.
      step_flops: name -> model FLOPs of one train step (for MFU).
      summarize: name -> summed step outputs -> training metrics (loss, accuracy, ...).
    """

    mesh: Mesh
    state: TrainState
    schedule: Callable[[int], Any]
    train_steps: dict[str, Callable]
    evaluate: Callable[[Any, int], dict[str, float]]
    batches: Any
    checkpointer: Checkpointer
    start: int
    fingerprint: str
    step_flops: dict[str, float]
    summarize: Callable[[dict[str, dict]], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """Where the loop stopped: its state, the step, and the signal that stopped it, if any."""

    state: TrainState
    final_step: int
    signal: str | None


def add_sums(total: dict | None, sums: dict) -> dict:
    """Sum two pytrees of step outputs (None: nothing yet)."""
    return sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)


def model_flops(eval_step, *args) -> float:
    """Model FLOPs of one train step: 3x the forward pass (forward + backward, Kaplan et al.
    2020), as XLA counts it on the lowered eval step (same batch; no dropout, no remat)."""
    cost = eval_step.lower(*args).cost_analysis() or {}
    return 3 * float(cost.get("flops", 0.0))


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
    """Set by SIGTERM (a preempted VM) or SIGINT (Ctrl-C); in multi-process runs, every process
    stops at the same step. A second SIGINT interrupts at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the process's handlers alone
            self._previous = {}
        return self

    def _handle(self, signum, frame) -> None:
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step) or bool(self.received)
        return self.received is not None

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def check_finite(sums: dict, first: int, last: int, checkpointer: Checkpointer) -> None:
    """Raise `TrainingDivergedError` when a loss or gradient of steps first..last is not finite
    (`sums`: per train step name, accumulated since step `first`)."""
    watched = [
        v
        for named in sums.values()
        for k, v in named.items()
        if k.endswith("nll_sum") or k == "grad_norm"
    ]
    if all(np.isfinite(float(v)) for v in watched):
        return
    good = checkpointer.latest_step()
    kept = (
        f"the last checkpoint, step {good}, was saved before it and verified on resume"
        if good
        else "no checkpoint exists"
    )
    raise TrainingDivergedError(
        f"non-finite loss or gradient between steps {first} and {last}; the run stopped without "
        f"saving ({kept}; {checkpointer.directory}). Lower config.train.learning_rate or "
        "raise config.train.warmup_steps, and resume or start a new config.output_dir."
    )


def prepare_run_directory(
    config, workdir: Path, main_process: bool, defaults: dict | None = None
) -> bool:
    """Whether the run resumes; checks the run's configuration record against `config` (a
    fresh run's record is written by its owner once its data is ready; fields the record lacks
    count as their `defaults`). A missing record of a resumed run is restored from its latest
    checkpoint."""
    steps = checkpoint_steps(workdir / "checkpoints")
    if steps and main_process and not (workdir / RUN_CONFIG_FILE).exists():
        checkpointer = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
        try:
            restore_run_config(workdir, checkpointer.saved_config(steps[-1]))
        finally:
            checkpointer.close()
    if steps:
        check_run_config(workdir, config.to_dict(), resuming=True, defaults=defaults)
    return bool(steps)


def batches_read(iterator) -> int:
    """How many batches a grain `iterator` has handed out (its data position), from its
    state: one index with threads, the sum of the workers' with worker processes (each reads
    every n-th batch)."""
    state = iterator.get_state()
    if "next_index" in state:
        return state["next_index"]
    return sum(worker["next_index"] for worker in state["iterators_in_use_states"])


def resume(checkpointer: Checkpointer, state, batches, fingerprint: str):
    """Restore the latest checkpoint (verified: checksums, step, data position, data) into
    `state`'s shardings; returns (state, step), step 0 for a fresh run."""
    start = checkpointer.latest_step() or 0
    if not start:
        return state, 0
    state = checkpointer.restore(start, state, batches)
    where = checkpointer.directory / str(start)
    record = checkpointer.run_record(start)
    position = batches_read(batches)
    problems = []
    if int(state.step) != start:
        problems.append(f"its train state is at step {int(state.step)}")
    if position != start:
        problems.append(f"its data position is batch {position}, not {start}")
    if problems:
        raise CheckpointError(f"checkpoint {where} is inconsistent: {'; '.join(problems)}")
    if record is None:
        log.warning("checkpoint %s predates corpus fingerprints: the corpus is not verified", where)
    elif record.get("data_fingerprint") != fingerprint:
        raise CheckpointError(
            f"the corpus changed since checkpoint {where} was written (its rows no longer "
            "match the fingerprint recorded there): resume with the original corpus and "
            "tokenizer, or start a new config.output_dir; nothing was overwritten"
        )
    log.info("resumed from %s at step %d", where, start)
    return state, start


def open_checkpoints(
    config, workdir: Path, state, batches, fingerprint: str, schedule, main_process: bool
) -> tuple[Checkpointer, Any, int]:
    """The run's checkpointer and the state and step to start from: the latest checkpoint,
    verified and restored (with the data position), or `state` at step 0."""
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        keep=config.train.keep_checkpoints,
        config=config.to_dict(),
        write_checksums=main_process,
    )
    try:
        state, start = resume(checkpointer, state, batches, fingerprint)
        schedule_note(config, start, schedule, checkpointer)
    except BaseException:
        checkpointer.close()
        raise
    return checkpointer, state, start


def schedule_note(config, start: int, schedule, checkpointer: Checkpointer) -> None:
    """Say what learning rate a resumed run continues with when train.steps changed."""
    if not start:
        return
    saved = checkpointer.saved_config(start)["train"]
    if saved["steps"] != config.train.steps:
        saved.setdefault("decay_steps", 0)  # checkpoints from before the field existed
        before = make_optimizer(ml_collections.ConfigDict(saved))[1]
        log.warning(
            "config.train.steps changed %d -> %d: the learning-rate schedule now runs over "
            "config.train.decay_steps or train.steps (%s); at step %d the rate is %.3g (%.3g "
            "under the checkpoint's schedule). Set config.train.decay_steps=%d to keep the "
            "original schedule.",
            saved["steps"],
            config.train.steps,
            config.train.decay_steps or config.train.steps,
            start,
            float(schedule(start)),
            float(before(start)),
            saved.get("decay_steps") or saved["steps"],
        )


def _train_metrics(loop: Loop, sums: dict, tick: float, peak: float, lr) -> dict:
    """The training record of the steps since `tick`: loss, accuracy, speed, MFU."""
    elapsed = time.perf_counter() - tick
    steps = {n: float(s["steps"]) for n, s in sums.items()}
    flops = sum(loop.step_flops[n] * k for n, k in steps.items())
    result = loop.summarize(sums)
    result.update(
        grad_norm=sum(float(s["grad_norm"]) for s in sums.values()) / sum(steps.values()),
        learning_rate=float(lr),
        tokens_per_second=sum(float(s["tokens"]) for s in sums.values()) / elapsed,
        model_flops_per_second=flops / elapsed,
        mfu=flops / elapsed / peak,
    )
    return result


class Records:
    """The loop's metric records: to `metrics.jsonl` on process 0, evaluations kept in memory."""

    def __init__(self, metrics: MetricsWriter | None):
        self.metrics = metrics
        self.evaluations: list[dict] = []

    def __call__(self, step: int, split: str, values: dict) -> None:
        if split == "eval":
            self.evaluations.append({"step": step, "split": split, **values})
        if self.metrics is not None:
            self.metrics.write(step, split, values)


def evaluated_params(state, train: ml_collections.ConfigDict):
    """The weights evaluations score: the temporal average with `train.ema_decay` > 0
    (`lm_jax.train.optimizer.weight_average`), else the trained weights."""
    if train.get("ema_decay", 0.0) > 0:
        average = averaged_params(state.opt_state, train.ema_decay)
        if average is not None:
            return average
    return state.params


def run_loop(
    loop: Loop,
    train: ml_collections.ConfigDict,
    choose: Callable[[int], str],
    record: Callable[[int, str, dict], None],
    peak: float,
    progress_bar: tqdm,
) -> LoopResult:
    """Train from `loop.start` to `train.steps`, the step at each step `choose(step)`: log
    every `train.log_every` steps, evaluate every `eval_every`, checkpoint every
    `checkpoint_every`, and stop with a checkpoint on SIGTERM / SIGINT."""
    t, state, start, stopped = train, loop.state, loop.start, None
    with jax.set_mesh(loop.mesh), _TerminationRequest() as termination:
        if start == 0:
            record(0, "eval", loop.evaluate(evaluated_params(state, t), 0))
        sums, tick, first = {}, time.perf_counter(), start + 1
        for step in progress_bar:
            name = choose(step)
            state, out = loop.train_steps[name](state, global_batch(next(loop.batches), loop.mesh))
            sums[name] = add_sums(sums.get(name), out)
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                check_finite(sums, first, done, loop.checkpointer)
                result = _train_metrics(loop, sums, tick, peak, loop.schedule(done))
                record(done, "train", result)
                shown = {
                    s: f"{result[k]:.3f}"
                    for k, s in (("loss", "loss"), ("accuracy", "acc"))
                    if k in result
                }
                progress_bar.set_postfix(**shown)
                sums, tick, first = {}, time.perf_counter(), done + 1
            if done % t.eval_every == 0 or done == t.steps:
                record(done, "eval", loop.evaluate(evaluated_params(state, t), done))
            stop = termination.reached(done)
            if done % t.checkpoint_every == 0 or done == t.steps or stop:
                check_finite(sums, first, done, loop.checkpointer)
                saved = {"step": done, "data_fingerprint": loop.fingerprint}
                loop.checkpointer.save(done, state, loop.batches, saved)
            if stop and done < t.steps:
                stopped = termination.received or "SIGTERM"
                log.warning("%s: saved step %d; rerun the same command to resume", stopped, done)
                break
        progress_bar.close()
        loop.checkpointer.close()  # the last save finished and verified before the summary
    return LoopResult(state, done if stopped else max(start, t.steps), stopped)


def run_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """The mesh of `config.mesh`; the global batch must split over its data x fsdp ways."""
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    if config.train.batch_size % batch_split(mesh):
        raise ConfigError(
            f"config.train.batch_size ({config.train.batch_size}) must be divisible by the "
            f"mesh's data x fsdp = {batch_split(mesh)} ways"
        )
    log.info("mesh %s over %d device(s)", dict(mesh.shape), mesh.size)
    return mesh


def train_recorded(
    loop: Loop,
    train: ml_collections.ConfigDict,
    workdir: Path,
    choose: Callable[[int], str],
    description: str,
    progress: bool,
    main_process: bool,
) -> tuple[LoopResult, list[dict]]:
    """`run_loop` with its records in `workdir/metrics.jsonl` and TensorBoard (process 0), a
    progress bar, MFU against this machine's peak; returns the result and the evaluations."""
    if loop.start >= train.steps:
        log.warning(
            "nothing to train: the latest checkpoint is step %d, at or past "
            "config.train.steps=%d; raise config.train.steps to continue",
            loop.start,
            train.steps,
        )
    metrics = None
    if main_process:
        metrics = MetricsWriter(
            workdir / "metrics.jsonl",
            drop_after=loop.start if loop.start else -1,
            tensorboard_dir=workdir / "tensorboard",
        )
    peak, peak_source = peak_flops()
    log.info(
        "model FLOPs per step %s; MFU against %.3g FLOP/s (%s)", loop.step_flops, peak, peak_source
    )
    bar = tqdm(
        range(loop.start, train.steps),
        initial=loop.start,
        total=train.steps,
        disable=not progress or not main_process,
        desc=description,
        unit="step",
        dynamic_ncols=True,
    )
    records = Records(metrics)
    try:
        result = run_loop(loop, train, choose, records, peak, bar)
    finally:
        if metrics is not None:
            metrics.close()
    return result, records.evaluations
