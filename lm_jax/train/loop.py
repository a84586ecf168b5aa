"""The pretraining loop: data, model, jitted steps, evaluation, checkpoints, metrics, plot."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from lm_jax import objectives
from lm_jax.config import validate
from lm_jax.data.pipeline import TOKENIZER_FILE, build_pretraining_data, eval_batches, train_batches
from lm_jax.models import TransformerConfig
from lm_jax.train.checkpoint import Checkpointer, check_run_config, checkpoint_steps
from lm_jax.train.losses import summarize, unigram_cross_entropy
from lm_jax.train.metrics import MetricsWriter, plot_loss_curve, read_metrics
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.step import INIT_STREAM, TrainState, make_eval_step, make_train_step, stream_key
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


def default_workdir(config: ml_collections.ConfigDict) -> Path:
    return Path(config.output_dir or f"runs/{config.objective}")


def build_model(config: ml_collections.ConfigDict, vocab_size: int) -> nnx.Module:
    """The objective's model (`lm_jax.train.tasks.TASKS`), initialised from the run's seed."""
    model_cfg = TransformerConfig(vocab_size=vocab_size, **config.model.to_dict())
    init_key = stream_key(config.seed, INIT_STREAM)
    return TASKS[config.objective].build(model_cfg, nnx.Rngs(params=init_key))


def evaluate(eval_step, params, batches) -> dict[str, float]:
    sums = None
    for i, rows in enumerate(batches):
        out = eval_step(params, rows, np.int32(i))
        sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
    return summarize(sums)


def pretrain(
    config: ml_collections.ConfigDict, workdir: Path | None = None, progress: bool = True
) -> RunSummary:
    """Pretrain (or resume) the configured run; returns where its outputs went."""
    validate(config)
    workdir = Path(workdir or default_workdir(config))
    resuming = bool(checkpoint_steps(workdir / "checkpoints"))
    check_run_config(workdir, config.to_dict(), resuming)
    data = build_pretraining_data(config, workdir, reuse_tokenizer=resuming)
    vocab = data.tokenizer.vocab
    t = config.train
    log.info(
        "corpus: %d train / %d held-out documents -> %d / %d rows of %d tokens",
        *data.num_documents,
        len(data.train),
        len(data.eval),
        config.data.seq_len,
    )

    graphdef, params = nnx.split(build_model(config, vocab.size))
    optimizer, schedule = make_optimizer(t)
    state = TrainState.create(params, optimizer)
    checkpointer = Checkpointer(workdir / "checkpoints", keep=t.keep_checkpoints)
    start = checkpointer.latest_step() or 0
    if start:
        state = checkpointer.restore(start, state)
        log.info("resumed from %s at step %d", checkpointer.directory / str(start), start)

    objective = functools.partial(
        objectives.get(config.objective), vocab=vocab, **config.objective_options.to_dict()
    )
    task = TASKS[config.objective]
    train_step = make_train_step(graphdef, optimizer, objective, config.seed, task)
    eval_step = make_eval_step(graphdef, objective, config.seed, task)
    batches = train_batches(data.train, t.batch_size, config.seed)
    held_out = eval_batches(data.eval, t.batch_size, t.eval_batches)
    metrics = MetricsWriter(workdir / "metrics.jsonl", drop_after=start if start else -1)

    def run_eval(step: int) -> None:
        metrics.write(step, "eval", evaluate(eval_step, state.params, held_out))

    try:
        if start == 0:
            run_eval(0)
        sums, tokens, tick = None, 0, time.perf_counter()
        bar = tqdm(
            range(start, t.steps),
            initial=start,
            total=t.steps,
            disable=not progress,
            desc=f"pretrain {config.objective}",
            unit="step",
            dynamic_ncols=True,
        )
        for step in bar:
            rows = batches[step]
            state, out = train_step(state, rows)
            tokens += int((rows["segment_ids"] > 0).sum())
            sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                elapsed = time.perf_counter() - tick
                result = summarize(sums)
                result.update(
                    grad_norm=float(sums["grad_norm"] / sums["steps"]),
                    learning_rate=float(schedule(done)),
                    tokens_per_second=tokens / elapsed,
                )
                if not math.isfinite(result["loss"]):
                    raise FloatingPointError(f"non-finite training loss at step {done}")
                metrics.write(done, "train", result)
                bar.set_postfix(loss=f"{result['loss']:.3f}", acc=f"{result['accuracy']:.3f}")
                sums, tokens, tick = None, 0, time.perf_counter()
            if done % t.eval_every == 0 or done == t.steps:
                run_eval(done)
            if done % t.checkpoint_every == 0 or done == t.steps:
                checkpointer.save(done, state)
        bar.close()
    finally:
        checkpointer.close()
        metrics.close()

    plot_path = plot_loss_curve(
        workdir / "metrics.jsonl",
        workdir / "loss.png",
        title=f"{config.objective} on {config.data.corpus}",
    )
    evals = sorted(
        (r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "eval"),
        key=lambda r: r["step"],
    )
    tokenizer_path = None if config.tokenizer.path else workdir / TOKENIZER_FILE
    return RunSummary(
        workdir=workdir,
        checkpoint_dir=checkpointer.directory,
        metrics_path=workdir / "metrics.jsonl",
        plot_path=plot_path,
        tokenizer_path=tokenizer_path,
        final_step=max(start, t.steps),
        first_eval_loss=evals[0]["loss"],
        last_eval_loss=evals[-1]["loss"],
        unigram_baseline=unigram_cross_entropy(
            data.train.tokens, data.eval.tokens, vocab.size, vocab.special_ids
        ),
        state=state,
    )
