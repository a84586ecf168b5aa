"""Training: optimiser, jitted steps, checkpoints, metrics and the pretraining loop."""
