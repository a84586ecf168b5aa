"""What to generate and how: the decoding settings, checked once, hashable (a jit static
argument)."""

from __future__ import annotations

import dataclasses

from lm_jax.errors import ConfigError

EARLY_STOPPING = (True, False, "never")


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings, named and defined as Hugging Face's `GenerationConfig` (so the same
    values give the same tokens).

    Attributes:
      max_new_tokens: tokens generated after the prompt (the decoder start token for an
        encoder-decoder) at most.
      min_new_tokens: end-of-sequence is forbidden before this many new tokens.
      num_beams: 1 is greedy search or sampling; more is beam search.
      length_penalty: a finished beam's score is its log-probability over its length to this
        power (> 0 favours longer sequences).
      early_stopping: beam search stops once `num_beams` sequences are finished (True), when
        no better one seems possible (False, the heuristic), or only at `max_new_tokens`
        ("never").
      no_repeat_ngram_size: > 0 forbids any n-gram of this size to occur twice.
      do_sample: sample (from `key`) instead of taking the most likely token.
      temperature, top_k, top_p: sampling warpers (1.0, 0 and 1.0 leave them out).
      eos_id: the end-of-sequence id (required); pad_id fills the rows that have ended.
      decoder_start_id: the first decoder input of an encoder-decoder (BART: </s>, T5: pad).
      forced_bos_id: the id forced as the first new token (BART's <s>), or None.
      forced_eos_id: the id forced at the last allowed position, or None.
      mask_id: the [MASK] id of UniLM's cloze decoding (`mask="unilm"`), or None.
    """

    eos_id: int
    pad_id: int
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    no_repeat_ngram_size: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    decoder_start_id: int | None = None
    forced_bos_id: int | None = None
    forced_eos_id: int | None = None
    mask_id: int | None = None

    def __post_init__(self):
        if self.eos_id is None:
            raise ConfigError("generation needs an end-of-sequence id (the tokenizer has none)")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"min_new_tokens ({self.min_new_tokens}) must be in [0, max_new_tokens "
                f"({self.max_new_tokens})]"
            )
        if self.num_beams < 1:
            raise ConfigError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.do_sample and self.num_beams > 1:
            raise ConfigError("sampling is for num_beams=1 (beam sampling is not supported)")
        if self.early_stopping not in EARLY_STOPPING:
            raise ConfigError(f"early_stopping must be one of {EARLY_STOPPING}")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
