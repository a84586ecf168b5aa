"""Generation: greedy, beam search and sampling with a key/value cache for the encoder-decoders
(BART, T5, MASS) and the shared encoder under causal and prefix-LM masks."""

from lm_jax.generation.config import GenerationConfig
from lm_jax.generation.generate import Generated, generate, generate_text

__all__ = ["GenerationConfig", "Generated", "generate", "generate_text"]
