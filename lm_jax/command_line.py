"""What every lm_jax command line shares: its logging, reading `--config` with overrides, and
turning lm_jax's errors into `lm_jax: error: ...` and exit status 2 (130 on Ctrl-C)."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable
from typing import Any

from absl import flags
from ml_collections import config_flags

from lm_jax.errors import LmJaxError

# Errors config_flags raises for a bad --config file or override.
FLAG_ERRORS = (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError)


def parse_config(argv: list[str], default: str | None, help_text: str):
    """Define --config (config_flags reads the overrides while defining it) and parse `argv`;
    returns (config, remaining arguments). No `default`: --config is required."""
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", default, help_text)
    rest = flags.FLAGS(argv)
    config = flags.FLAGS.config
    if config is None:
        raise ValueError("--config=<file> is required")
    config.to_dict()  # a config file that failed to load raises here, not at first use
    return config, rest


def configure_logging() -> None:
    """lm_jax's progress lines on stderr; the libraries it uses kept quiet."""
    # force: a library imported earlier may have given the root logger a handler already.
    logging.basicConfig(level=logging.INFO, format="[lm_jax] %(message)s", force=True)
    # A failed checkpoint save is reported by lm_jax's own error; orbax's background threads
    # and their asyncio tasks would log the same failure again, with tracebacks, many times.
    for quiet in ("orbax", "asyncio"):
        logging.getLogger(quiet).setLevel(logging.CRITICAL)
    for noisy in ("absl", "jax", "gensim", "smart_open", "tensorflow_datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str) -> int:
    print(f"lm_jax: error: {message}", file=sys.stderr)
    return 2


def run_reporting_errors(work: Callable[[], Any]) -> tuple[int, Any]:
    """(0, work()) or, when it raises an lm_jax error, a file system error or Ctrl-C, the exit
    status after printing what happened (nothing already saved is lost)."""
    try:
        return 0, work()
    except LmJaxError as e:
        return fail(str(e)), None
    except OSError as e:  # a file system failure no check foresaw (full disk, I/O error)
        return fail(f"{e}; the checkpoints already saved are intact"), None
    except KeyboardInterrupt:
        print(
            "lm_jax: interrupted; the checkpoints already saved are intact (rerun the same "
            "command to resume from the latest)",
            file=sys.stderr,
        )
        return 130, None


def explain_flag_error(
    argv: list[str], error: Exception, fields: set[str], free: tuple[str, ...] = ()
) -> str:
    """The message for a command line config_flags refused: the first `--config.NAME=` that
    is not one of `fields` (nor under a `free` prefix), with the closest field, else the
    error itself."""
    for arg in argv[1:]:
        if arg.startswith("--config.") and "=" in arg:
            name = arg[len("--config.") :].split("=", 1)[0]
            if name not in fields and not name.startswith(free):
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean config.{close[0]}?)" if close else ""
                return f"unknown config field config.{name}{hint}"
    cause = error.__cause__ or error
    return f"invalid command line: {' '.join(str(cause).split())}"
