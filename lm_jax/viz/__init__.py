"""Pictures of the objectives: a batch's tokens by role (`show_batch`), its attention masks
(`plot_attention`), and objectives applied to a few texts to draw (`objective_example`)."""

from lm_jax.viz.attention import attention_panels, plot_attention
from lm_jax.viz.batches import ROLES, BatchView, Token, show_batch
from lm_jax.viz.examples import example_rows, objective_example

__all__ = [
    "ROLES",
    "BatchView",
    "Token",
    "attention_panels",
    "example_rows",
    "objective_example",
    "plot_attention",
    "show_batch",
]
