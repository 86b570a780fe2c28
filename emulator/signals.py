"""SIGINT, SIGTERM and SIGHUP as one exception, for commands that start containers.

Python turns only SIGINT into ``KeyboardInterrupt``, and not even that when the process
inherited SIGINT as ignored (a background job of a non-interactive shell, e.g. ``make
local-serve &``): such a process never stops on Ctrl-C, and SIGTERM or SIGHUP kill it
without any cleanup, leaving its containers. Inside ``handled()`` each of the three raises
``Interrupted`` (a ``KeyboardInterrupt``, so every ``finally`` and every cleanup written for
Ctrl-C runs) whatever the inherited disposition was. Further signals while that cleanup
runs are noted and do not cut it short. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A command was stopped by `signum`; its message says what was removed and what kept."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process a signal ended."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class Interrupts:
    """The signals received inside one ``handled()`` block, first first."""

    def __init__(self) -> None:
        self.received: list[int] = []

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None

    def interrupted(self, message: str = "") -> Interrupted:
        """The exception to raise again (with `message`) when a library swallowed the first one."""
        return Interrupted(self.first or signal.SIGINT, message)


_active: Interrupts | None = None


@contextlib.contextmanager
def handled() -> Iterator[Interrupts]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` once; see the module.

    Nested blocks share the outer one's record. Outside the main thread (where Python
    cannot install handlers) the block records nothing.
    """
    global _active
    if _active is not None:
        yield _active
        return
    if threading.current_thread() is not threading.main_thread():
        yield Interrupts()
        return
    record = Interrupts()

    def on_signal(signum: int, frame: Any) -> None:
        record.received.append(signum)
        if len(record.received) == 1:
            raise Interrupted(signum)
        print(f"smrl-local: {signal.Signals(signum).name} received; still removing containers "
              "(SIGKILL would leave them for the next command to sweep)", file=sys.stderr, flush=True)

    def on_thread_error(args: Any) -> None:
        # Ctrl-C in a terminal reaches the whole process group: docker-compose stops too, and
        # the SDK's thread that runs it raises "Failed to run: docker-compose ...". After a
        # signal that is the expected end of those threads, not a bug to print.
        if not record.received:
            previous_hook(args)

    previous = {signum: signal.signal(signum, on_signal) for signum in HANDLED}
    previous_hook, threading.excepthook = threading.excepthook, on_thread_error
    _active = record
    try:
        yield record
    finally:
        _active = None
        threading.excepthook = previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)
