"""The generic trainer's configuration sections (`config.train`, `config.mesh`,
`config.distributed`), documented field by field, with the rules that validate them. Every run
(pretraining, fine-tuning) embeds them in its own schema.
"""

from __future__ import annotations

import ml_collections

from lm_jax.config_tools import Rule
from lm_jax.train.optimizer import DECAYS, OPTIMIZERS


def train_settings() -> ml_collections.ConfigDict:
    """`config.train`: optimiser, schedule, steps and the loop's intervals."""
    c = ml_collections.ConfigDict()
    c.steps = 1000
    c.batch_size = 32
    c.learning_rate = 2e-3  # peak, reached after warmup
    c.warmup_steps = 100
    c.decay = "linear"  # linear | cosine (to 0 at `steps`) | rsqrt (peak*sqrt(warmup/step))
    # Steps over which linear / cosine decay reach 0 (0: train.steps). A resumed run with more
    # train.steps stretches the schedule by default; keep the original one by setting this to
    # the original train.steps (the rate then stays 0 after it).
    c.decay_steps = 0
    c.weight_decay = 0.01  # AdamW; biases and LayerNorm parameters are not decayed
    c.b1 = 0.9
    c.b2 = 0.98
    c.eps = 1e-6
    c.clip_norm = 1.0  # global-norm gradient clipping (0 disables)
    c.optimizer = "adamw"  # adamw | lamb (You et al. 2020) | adafactor (T5)
    c.grad_accumulation = 1  # micro-batches per update (steps count micro-batches)
    # Temporal averaging: evaluate (and keep as the best model) an exponential moving average
    # of the weights with this decay (0: off; Adhikari et al. 2019's LSTM_reg uses 0.99)
    c.ema_decay = 0.0
    c.log_every = 50  # steps between training-metric records (and finiteness checks)
    c.eval_every = 250
    c.eval_batches = 8
    c.checkpoint_every = 250
    c.keep_checkpoints = 3
    return c


def mesh_settings() -> ml_collections.ConfigDict:
    """`config.mesh`: the device mesh (`lm_jax.sharding`): the batch is split over data x fsdp,
    parameters and optimiser state over fsdp ("embed" dimensions) and tensor (heads, MLP,
    vocabulary)."""
    c = ml_collections.ConfigDict()
    c.data = -1  # data-parallel ways; -1 = every device not used by fsdp x tensor
    c.fsdp = 1  # fully-sharded data-parallel ways
    c.tensor = 1  # tensor-parallel ways
    # JAX devices the command line splits a CPU-only host into (lm_jax.runtime.prepare):
    # 0 = as many as the mesh needs, one per usable core that divides the batch when data is -1.
    c.cpu_devices = 0
    return c


def distributed_settings() -> ml_collections.ConfigDict:
    """`config.distributed`: multi-host runs (TPU pods, multi-node GPU) call
    `jax.distributed.initialize` before anything else."""
    c = ml_collections.ConfigDict()
    c.initialize = False  # True on every host of a multi-host run
    c.coordinator_address = ""  # "host:port" of process 0; "" = auto-detect
    c.num_processes = 0  # 0 = auto-detect (TPU VM, SLURM, ...)
    c.process_id = -1  # -1 = auto-detect
    return c


def _positive(x) -> bool:
    return x > 0


RULES: dict[str, Rule] = {
    "train.steps": (_positive, "must be > 0"),
    "train.batch_size": (_positive, "must be > 0"),
    "train.learning_rate": (_positive, "must be > 0"),
    "train.warmup_steps": (lambda x: x >= 0, "must be >= 0"),
    "train.decay": (lambda x: x in DECAYS, f"must be one of {list(DECAYS)}"),
    "train.decay_steps": (lambda x: x >= 0, "must be >= 0 (0: train.steps)"),
    "train.weight_decay": (lambda x: x >= 0, "must be >= 0"),
    "train.b1": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "train.b2": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "train.eps": (_positive, "must be > 0"),
    "train.clip_norm": (lambda x: x >= 0, "must be >= 0"),
    "train.ema_decay": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "train.optimizer": (lambda x: x in OPTIMIZERS, f"must be one of {list(OPTIMIZERS)}"),
    "train.grad_accumulation": (_positive, "must be > 0"),
    "train.log_every": (_positive, "must be > 0"),
    "train.eval_every": (_positive, "must be > 0"),
    "train.eval_batches": (_positive, "must be > 0"),
    "train.checkpoint_every": (_positive, "must be > 0"),
    "train.keep_checkpoints": (_positive, "must be > 0"),
    "mesh.data": (lambda x: x == -1 or x > 0, "must be -1 or > 0"),
    "mesh.fsdp": (lambda x: x == -1 or x > 0, "must be -1 or > 0"),
    "mesh.tensor": (lambda x: x == -1 or x > 0, "must be -1 or > 0"),
    "mesh.cpu_devices": (lambda x: x >= 0, "must be >= 0 (0: automatic)"),
    "distributed.num_processes": (lambda x: x >= 0, "must be >= 0 (0 = auto-detect)"),
    "distributed.process_id": (lambda x: x >= -1, "must be >= -1 (-1 = auto-detect)"),
}
