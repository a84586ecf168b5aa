"""Pretraining runs: the configured corpus, objective (or mixture) and model, trained by the
generic loop (`lm_jax.train.loop`), with a summary of where the outputs went.

The run directory is locked for the whole run (`RunDirectoryLock`): a second run into it fails
with `OutputError` before writing anything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from lm_jax import objectives, runtime
from lm_jax.data.pipeline import (
    TOKENIZER_FILE,
    batch_iterator,
    build_pretraining_data,
    eval_batches,
    train_batches,
)
from lm_jax.errors import DataError
from lm_jax.models import TransformerConfig
from lm_jax.pretrain.schema import components, schema_defaults
from lm_jax.pretrain.tasks import model_settings, step_task, task_of
from lm_jax.pretrain.validation import t5_sentinels_needed, validate
from lm_jax.sharding import global_batch
from lm_jax.train.checkpoint import check_run_config
from lm_jax.train.loop import (
    Loop,
    add_sums,
    initialize_distributed,
    model_flops,
    open_checkpoints,
    prepare_run_directory,
    run_mesh,
    train_recorded,
)
from lm_jax.train.losses import summarize, unigram_cross_entropy
from lm_jax.train.metrics import plot_loss_curve, read_metrics
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

log = logging.getLogger(__name__)
UNK_WARNING_FRACTION = 0.01


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
    """The objectives' model (`lm_jax.pretrain.tasks`; a mixture's objectives share one),
    initialised from the run's seed."""
    fields = config.model.to_dict()
    attention = fields.pop("attention")
    model_cfg = TransformerConfig(
        vocab_size=vocab_size,
        attention_implementation=None if attention == "auto" else attention,
        **fields,
    )
    init_key = stream_key(config.seed, INIT_STREAM)
    objective = components(config)[0].objective
    settings = model_settings(objective, config.model_options.to_dict())
    return task_of(objective).build(model_cfg, settings, nnx.Rngs(params=init_key))


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


def evaluate(eval_steps: dict, params, step: int, batches) -> dict[str, float]:
    """Every objective of the run on the same held-out batches (fixed masks per batch), at any
    `step`."""
    sums = {}
    for name, eval_step in eval_steps.items():
        for i, rows in enumerate(batches):
            sums[name] = add_sums(sums.get(name), eval_step(params, rows, np.int32(i)))
    return summarize_components(sums)


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
    counts = data.train.token_counts(vocab.size)
    unknown = float(counts[vocab.unk_id] / counts.sum()) if counts.sum() else 0.0
    if unknown > UNK_WARNING_FRACTION:
        log.warning(
            "%.1f%% of the training tokens are [UNK]: the tokenizer does not fit this corpus "
            "(another language or script? config.tokenizer.lowercase?)",
            100 * unknown,
        )


def pretrain(
    config: ml_collections.ConfigDict, workdir: Path | None = None, progress: bool = True
) -> RunSummary:
    """Pretrain (or resume) the configured run; returns where its outputs went.

    The run directory is locked for the whole run (`RunDirectoryLock`): a second run into it
    fails with `OutputError` before writing anything."""
    validate(config)
    runtime.prepare(config)  # before the first JAX computation
    if config.distributed.initialize:
        initialize_distributed(config.distributed)
    workdir = Path(workdir or default_workdir(config))
    if jax.process_index() != 0:
        return _pretrain_locked(config, workdir, progress)
    with RunDirectoryLock(workdir):
        return _pretrain_locked(config, workdir, progress)


def _pretrain_locked(config, workdir: Path, progress: bool) -> RunSummary:
    main_process = jax.process_index() == 0
    resuming = prepare_run_directory(config, workdir, main_process, schema_defaults(config))
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
    loop = _build_loop(config, workdir, data, main_process)
    try:
        return _train(config, workdir, data, loop, progress, main_process)
    finally:
        loop.checkpointer.close()


def _build_loop(config, workdir: Path, data, main_process: bool) -> Loop:
    """The mesh, the (restored) sharded state and the jitted steps of every component."""
    t, vocab = config.train, data.tokenizer.vocab
    mesh = run_mesh(config)
    optimizer, schedule = make_optimizer(t)
    graphdef, state, state_sharding = init_train_state(
        functools.partial(build_model, config, vocab.size), optimizer, mesh
    )
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    batches = batch_iterator(
        train_batches(data.train, t.batch_size, config.seed, **shard), workers=config.data.workers
    )
    fingerprint = hashlib.sha256(
        (data.train.fingerprint() + data.eval.fingerprint()).encode()
    ).hexdigest()
    checkpointer, state, start = open_checkpoints(
        config, workdir, state, batches, fingerprint, schedule, main_process
    )
    train_steps, eval_steps = {}, {}
    settings = model_settings(components(config)[0].objective, config.model_options.to_dict())
    for c in components(config):
        task = step_task(c.objective, c.options, vocab, settings)
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
    with jax.set_mesh(mesh):
        step_flops = {
            n: model_flops(f, state.params, held_out[0], np.int32(0)) for n, f in eval_steps.items()
        }
    return Loop(
        mesh=mesh,
        state=state,
        schedule=schedule,
        train_steps=train_steps,
        evaluate=functools.partial(evaluate, eval_steps, batches=held_out),
        batches=batches,
        checkpointer=checkpointer,
        start=start,
        fingerprint=fingerprint,
        step_flops=step_flops,
        summarize=summarize_components,
    )


def _train(config, workdir: Path, data, loop: Loop, progress: bool, main_process: bool):
    """Run the generic loop over the run's components; then the summary."""
    names, weights = zip(*((c.name, c.weight) for c in components(config)))
    result, evaluations = train_recorded(
        loop,
        config.train,
        workdir,
        lambda step: names[choose_component(config.seed, step, weights)],
        f"pretrain {'+'.join(names)}",
        progress,
        main_process,
    )
    return _summary(config, workdir, data, loop, result, evaluations, main_process)


def _summary(config, workdir, data, loop, result, evaluations, main_process) -> RunSummary:
    vocab = data.tokenizer.vocab
    names = [c.name for c in components(config)]
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
        checkpoint_dir=loop.checkpointer.directory,
        metrics_path=workdir / "metrics.jsonl",
        plot_path=plot_path,
        tokenizer_path=tokenizer_path,
        final_step=result.final_step,
        trained_steps=result.final_step - loop.start,
        first_eval_loss=evals[0]["loss"] if evals else math.nan,
        last_eval_loss=evals[-1]["loss"] if evals else math.nan,
        unigram_baseline=unigram_cross_entropy(
            data.train.token_counts(vocab.size),
            data.eval.token_counts(vocab.size),
            vocab.special_ids,
        ),
        state=result.state,
        interrupted=result.signal is not None,
        signal=result.signal,
    )
