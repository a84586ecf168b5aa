"""The generic trainer: optimiser, jitted sharded steps, the loop, checkpoints, metrics."""
