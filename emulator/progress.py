"""How long operations report progress: through a `Log`, a function that takes one line."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]


def quiet(line: str) -> None:
    """A `Log` that shows nothing."""
