"""The pretraining loop: data, mesh, jitted sharded steps, evaluation, checkpoints, metrics.

Reliability: the run directory is locked for the run; SIGTERM (a preempted VM) or SIGINT
(Ctrl-C) saves a checkpoint at the current step and returns; a non-finite loss or gradient
stops the run before any checkpoint holds it, so the last good checkpoint stays the latest;
a resume verifies the checkpoint's checksums, step, data position and corpus fingerprint;
multi-host runs agree on the preemption step through JAX's preemption sync point.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
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
from lm_jax.config import components, t5_sentinels_needed, validate
from lm_jax.data.pipeline import (
    TOKENIZER_FILE,
    batch_iterator,
    build_pretraining_data,
    eval_batches,
    train_batches,
)
from lm_jax.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from lm_jax.models import TransformerConfig
from lm_jax.sharding import batch_split, global_batch, make_mesh
from lm_jax.train.checkpoint import (
    RUN_CONFIG_FILE,
    Checkpointer,
    check_run_config,
    checkpoint_steps,
    restore_run_config,
)
from lm_jax.train.losses import summarize, unigram_cross_entropy
from lm_jax.train.metrics import MetricsWriter, peak_flops, plot_loss_curve, read_metrics
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.run_directory import RunDirectoryLock
from lm_jax.train.step import (
    INIT_STREAM,
    MIXTURE_STREAM,
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
    stream_key,
)
from lm_jax.train.tasks import step_task, task_of

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """Where a run's outputs are, how its held-out loss moved, and its final state."""

    workdir: Path
    checkpoint_dir: Path
    metrics_path: Path
    plot_path: Path | None  # None when the picture could not be written
    tokenizer_path: Path | None
    final_step: int
    first_eval_loss: float
    last_eval_loss: float
    unigram_baseline: float
    state: TrainState
    interrupted: bool  # stopped early by a signal, with a checkpoint at final_step
    trained_steps: int = 0  # steps trained by this call (0: the run was already done)
    signal: str | None = None  # SIGTERM or SIGINT when interrupted


def default_workdir(config: ml_collections.ConfigDict) -> Path:
    return Path(config.output_dir or f"runs/{config.objective}")


def build_model(config: ml_collections.ConfigDict, vocab_size: int) -> nnx.Module:
    """The objectives' model (`lm_jax.train.tasks.TASKS`; a mixture's objectives share one),
    initialised from the run's seed."""
    model_cfg = TransformerConfig(vocab_size=vocab_size, **config.model.to_dict())
    init_key = stream_key(config.seed, INIT_STREAM)
    objective = components(config)[0].objective
    return task_of(objective).build(model_cfg, nnx.Rngs(params=init_key))


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


UNK_WARNING_FRACTION = 0.01


def _check_vocabulary(config, data) -> None:
    """Refuse a vocabulary the objectives cannot use; warn when it does not fit the corpus."""
    vocab = data.tokenizer.vocab
    if not len(vocab.regular_ids()):
        raise DataError(
            f"the tokenizer's vocabulary ({vocab.size} ids) holds only special tokens: there is "
            "nothing to predict or to sample as a replacement (config.tokenizer.path)"
        )
    for c in components(config):
        if c.objective == "t5":
            need = t5_sentinels_needed(config.data.seq_len, c.options)
            if len(vocab.sentinel_ids) < need:
                raise DataError(
                    f"t5 on rows of {config.data.seq_len} tokens needs {need} sentinel ids; the "
                    f"tokenizer has {len(vocab.sentinel_ids)} (SentencePiece: raise "
                    "config.tokenizer.extra_ids; a WordPiece vocab.txt has none: use a "
                    "SentencePiece model)"
                )
    real = data.train.tokens[data.train.segment_ids != 0]
    unknown = float(np.mean(real == vocab.unk_id)) if real.size else 0.0
    if unknown > UNK_WARNING_FRACTION:
        log.warning(
            "%.1f%% of the training tokens are [UNK]: the tokenizer does not fit this corpus "
            "(another language or script? config.tokenizer.lowercase?)",
            100 * unknown,
        )


def _prepare_run_directory(config, workdir: Path, main_process: bool) -> bool:
    """Whether the run resumes; checks (or, on a fresh run's process 0, nothing yet: the
    record is written once the data is ready) the run's configuration record. A missing record
    of a resumed run is restored from its latest checkpoint."""
    steps = checkpoint_steps(workdir / "checkpoints")
    if steps and main_process and not (workdir / RUN_CONFIG_FILE).exists():
        checkpointer = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
        try:
            restore_run_config(workdir, checkpointer.saved_config(steps[-1]))
        finally:
            checkpointer.close()
    if steps:
        check_run_config(workdir, config.to_dict(), resuming=True)
    return bool(steps)


def _resume(checkpointer: Checkpointer, state, batches, fingerprint: str):
    """Restore the latest checkpoint (verified: checksums, step, data position, corpus) into
    `state`'s shardings; returns (state, step), step 0 for a fresh run."""
    start = checkpointer.latest_step() or 0
    if not start:
        return state, 0
    state = checkpointer.restore(start, state, batches)
    where = checkpointer.directory / str(start)
    record = checkpointer.run_record(start)
    position = batches.get_state().get("next_index")
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


def _schedule_note(config, start: int, schedule, checkpointer: Checkpointer) -> None:
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


def pretrain(
    config: ml_collections.ConfigDict, workdir: Path | None = None, progress: bool = True
) -> RunSummary:
    """Pretrain (or resume) the configured run; returns where its outputs went.

    The run directory is locked for the whole run (`RunDirectoryLock`): a second run into it
    fails with `OutputError` before writing anything."""
    validate(config)
    if config.distributed.initialize:
        initialize_distributed(config.distributed)
    workdir = Path(workdir or default_workdir(config))
    if jax.process_index() != 0:
        return _pretrain_locked(config, workdir, progress)
    with RunDirectoryLock(workdir):
        return _pretrain_locked(config, workdir, progress)


def _pretrain_locked(config, workdir: Path, progress: bool) -> RunSummary:
    main_process = jax.process_index() == 0
    resuming = _prepare_run_directory(config, workdir, main_process)
    rows = objectives.spec(components(config)[0].objective).rows
    data = build_pretraining_data(config, workdir, reuse_tokenizer=resuming, rows=rows)
    _check_vocabulary(config, data)
    if not resuming and main_process:
        check_run_config(workdir, config.to_dict(), resuming=False)
    log.info(
        "corpus: %d train / %d held-out documents -> %d / %d rows of %d tokens",
        *data.num_documents,
        len(data.train),
        len(data.eval),
        config.data.seq_len,
    )
    run = _build_run(config, workdir, data, main_process)
    try:
        return _train(config, workdir, data, run, progress, main_process)
    finally:
        run.checkpointer.close()


@dataclasses.dataclass
class _Run:
    """What the loop trains with: mesh, state, steps, data, checkpointer, where it starts."""

    mesh: object
    state: TrainState
    schedule: object
    train_steps: dict
    eval_steps: dict
    batches: object
    held_out: list
    checkpointer: Checkpointer
    start: int
    fingerprint: str


def _build_run(config, workdir: Path, data, main_process: bool) -> _Run:
    """The mesh, the (restored) sharded state and the jitted steps of every component."""
    t, vocab = config.train, data.tokenizer.vocab
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
        workdir / "checkpoints",
        keep=t.keep_checkpoints,
        config=config.to_dict(),
        write_checksums=main_process,
    )
    fingerprint = hashlib.sha256(
        (data.train.fingerprint() + data.eval.fingerprint()).encode()
    ).hexdigest()
    try:
        state, start = _resume(checkpointer, state, batches, fingerprint)
        _schedule_note(config, start, schedule, checkpointer)
    except BaseException:
        checkpointer.close()
        raise
    train_steps, eval_steps = {}, {}
    for c in components(config):
        task = step_task(c.objective, c.options, vocab)
        train_steps[c.name] = make_train_step(
            graphdef, optimizer, task, config.seed, mesh, state_sharding
        )
        eval_steps[c.name] = make_eval_step(
            graphdef, task, config.seed, mesh, state_sharding.params
        )
    held_out = [
        global_batch(b, mesh)
        for b in eval_batches(data.eval, t.batch_size, t.eval_batches, **shard)
    ]
    return _Run(
        mesh,
        state,
        schedule,
        train_steps,
        eval_steps,
        batches,
        held_out,
        checkpointer,
        start,
        fingerprint,
    )


def _train(config, workdir: Path, data, run: _Run, progress: bool, main_process: bool):
    """The loop: train, log, evaluate, checkpoint, stop on a signal; then the summary."""
    t = config.train
    names, weights = zip(*((c.name, c.weight) for c in components(config)))
    if run.start >= t.steps:
        log.warning(
            "nothing to train: the latest checkpoint is step %d, at or past "
            "config.train.steps=%d; raise config.train.steps to continue",
            run.start,
            t.steps,
        )
    metrics = (
        MetricsWriter(
            workdir / "metrics.jsonl",
            drop_after=run.start if run.start else -1,
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

    with jax.set_mesh(run.mesh):
        params = run.state.params
        step_flops = {n: model_flops(f, params, run.held_out[0]) for n, f in run.eval_steps.items()}
    peak, peak_source = peak_flops()
    log.info("model FLOPs per step %s; MFU against %.3g FLOP/s (%s)", step_flops, peak, peak_source)

    state, start, signal_name = run.state, run.start, None
    with jax.set_mesh(run.mesh), _TerminationRequest() as termination:
        try:
            if start == 0:
                record(0, "eval", evaluate(run.eval_steps, state.params, run.held_out))
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
                state, out = run.train_steps[name](state, global_batch(next(run.batches), run.mesh))
                sums[name] = _add(sums.get(name), out)
                done = step + 1
                if done % t.log_every == 0 or done == t.steps:
                    _check_finite(sums, first, done, run.checkpointer)
                    result = _train_metrics(sums, step_flops, tick, peak, run.schedule(done))
                    record(done, "train", result)
                    bar.set_postfix(loss=f"{result['loss']:.3f}", acc=f"{result['accuracy']:.3f}")
                    sums, tick, first = {}, time.perf_counter(), done + 1
                if done % t.eval_every == 0 or done == t.steps:
                    record(done, "eval", evaluate(run.eval_steps, state.params, run.held_out))
                stop = termination.reached(done)
                if done % t.checkpoint_every == 0 or done == t.steps or stop:
                    _check_finite(sums, first, done, run.checkpointer)
                    run.checkpointer.save(
                        done,
                        state,
                        run.batches,
                        {"step": done, "data_fingerprint": run.fingerprint},
                    )
                if stop and done < t.steps:
                    signal_name = termination.received or "SIGTERM"
                    log.warning(
                        "%s: saved step %d; rerun the same command to resume", *(signal_name, done)
                    )
                    start = done
                    break
            bar.close()
            run.checkpointer.close()  # the last save finished and verified before the summary
        finally:
            if metrics is not None:
                metrics.close()
    return _summary(
        config, workdir, data, run, state, evaluations, start, signal_name, main_process
    )


def _train_metrics(sums: dict, step_flops: dict, tick: float, peak: float, lr) -> dict:
    """The training record of the steps since `tick`: loss, accuracy, speed, MFU."""
    elapsed = time.perf_counter() - tick
    steps = {n: float(s["steps"]) for n, s in sums.items()}
    flops = sum(step_flops[n] * k for n, k in steps.items())
    result = summarize_components(sums)
    result.update(
        grad_norm=sum(float(s["grad_norm"]) for s in sums.values()) / sum(steps.values()),
        learning_rate=float(lr),
        tokens_per_second=sum(float(s["tokens"]) for s in sums.values()) / elapsed,
        model_flops_per_second=flops / elapsed,
        mfu=flops / elapsed / peak,
    )
    return result


def _summary(config, workdir, data, run, state, evaluations, start, signal_name, main_process):
    t, vocab = config.train, data.tokenizer.vocab
    names = [c.name for c in components(config)]
    final_step = start if signal_name else max(start, t.steps)
    plot_path = workdir / "loss.png"
    if main_process:
        plot_path = plot_loss_curve(
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
        checkpoint_dir=run.checkpointer.directory,
        metrics_path=workdir / "metrics.jsonl",
        plot_path=plot_path,
        tokenizer_path=tokenizer_path,
        final_step=final_step,
        trained_steps=final_step - run.start,
        first_eval_loss=evals[0]["loss"] if evals else math.nan,
        last_eval_loss=evals[-1]["loss"] if evals else math.nan,
        unigram_baseline=unigram_cross_entropy(
            data.train.tokens, data.eval.tokens, vocab.size, vocab.special_ids
        ),
        state=state,
        interrupted=signal_name is not None,
        signal=signal_name,
    )
