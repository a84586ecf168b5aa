"""lm_jax: Transformer language-model pretraining objectives, models and training in JAX."""

from lm_jax.errors import CheckpointError, ConfigError, DataError, LmJaxError

__version__ = "0.1.0"
__all__ = ["LmJaxError", "ConfigError", "DataError", "CheckpointError", "__version__"]
