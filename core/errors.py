"""The error every package raises when a command cannot start; ``core.runner`` turns it into one line and exit 2.

(A record that cannot be used is ``core.conversation.BadRecord``: it names the file, record and reason.)
"""
from __future__ import annotations


class UsageError(Exception):
    """Something to fix before anything runs (a missing file, key or option); the message says what."""
