"""How errors reach a user: one line each.

This module imports nothing of the project and no library.
"""

from __future__ import annotations

MAX_CHARS = 500


def one_line(exc: BaseException) -> str:
    """`TypeName: first line of the message`, cut to MAX_CHARS (a traceback or a
    multi-line library message never floods a summary, a table or an MLflow tag)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line[:MAX_CHARS]
