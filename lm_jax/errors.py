"""Error types with messages that name the problem; the command line turns them into exit 2."""


class LmJaxError(Exception):
    """Base class of every error lm_jax raises on purpose for bad input."""


class ConfigError(LmJaxError, ValueError):
    """An invalid configuration field or value; the message names the field."""


class DataError(LmJaxError, ValueError):
    """A missing, empty, too small or malformed corpus, or a tokenizer/vocabulary mismatch."""


class CheckpointError(LmJaxError):
    """A corrupt checkpoint, or one that does not match the current configuration."""


class TrainingDivergedError(LmJaxError):
    """A non-finite loss or gradient; the run stopped before saving it."""


class OutputError(LmJaxError):
    """The run directory cannot be written (read-only, a file, full, or in use by another run)."""
