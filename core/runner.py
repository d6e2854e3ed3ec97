"""The one CLI runner: every ``python -m ...`` entry point ends in an exit code and, on error, one clear line.

Wrap a command's ``main(argv) -> int`` with :func:`command`. Errors the user can act on become
``error: ...`` on stderr and an exit code; a traceback is printed only for bugs, or for any error when
``PLATOLM_DEBUG=1``.

=====  ==========================================================================================
code   meaning
=====  ==========================================================================================
0      done
1      the run failed: a bad record under ``--strict``, an unreadable file, an endpoint that refused,
       jobs that failed (``core.engine.JobsFailed``: the same command retries them)
2      the command cannot start: a missing input, key or option (:class:`UsageError`), a bad value
130    interrupted (Ctrl-C / SIGTERM); resumable commands continue when run again
=====  ==========================================================================================
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable

import openai

from core.conversation import BadRecord
from core.endpoint import FATAL, RetriesExhausted, describe
from core.engine import JobsFailed
from core.errors import UsageError


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return next((line for line in text.splitlines() if line.strip()), type(err).__name__)


def explain(err: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an error the user can act on; None for a bug."""
    if isinstance(err, (UsageError, BadRecord)):
        return str(err), 2 if isinstance(err, UsageError) else 1
    if isinstance(err, JobsFailed):
        return str(err), 1
    if isinstance(err, FATAL):
        return (f"the endpoint refused the request ({type(err).__name__}, HTTP {err.status_code}); check the "
                f"base URL, model name and key variable"), 1
    if isinstance(err, (RetriesExhausted, openai.APIError)):
        return (str(err) if isinstance(err, RetriesExhausted) else describe(err)), 1
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"{err.filename}: {err.strerror or 'no such file or directory'}", 2
    if isinstance(err, OSError):
        return _first_line(err), 1
    if isinstance(err, ValueError):
        return _first_line(err), 2
    return None


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a CLI's ``main(..., argv)`` so that errors end as described in the module docstring."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
            explained = None if os.environ.get("PLATOLM_DEBUG") else explain(err)
            if explained is None:
                raise
            message, code = explained
            print(f"error: {message}", file=sys.stderr)
            return code

    return run
