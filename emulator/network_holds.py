"""Who may remove a Docker network that several processes' jobs and endpoints share.

Every job of every process joins the same ``sagemaker-local`` network, made when missing and
removed when unused. Unused is not enough: between one process making sure the network
exists and compose attaching its container, another process saw it empty and removed it
("network sagemaker-local not found"; measured with two test runs side by side). So each
user of a network holds a shared ``flock`` on a file named after it for as long as it uses
the network, and only the last one out, holding the lock exclusively, removes it; a newcomer
waits for that removal to finish, then makes the network anew.

The lock files live in the system's temp folder, shared by every process of this machine
(the engine's networks are too). Pure standard library.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


class NetworkHold:
    """A process's hold on the shared network `name`; use as a context manager."""

    def __init__(self, name: str, lock_dir: str | os.PathLike | None = None):
        self.path = Path(lock_dir or tempfile.gettempdir()) / f"smrl-local-network-{name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> NetworkHold:
        # Read-only: any user can lock a file another user created.
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        return self

    def last_out(self) -> bool:
        """Gives up this hold. True when no other process holds the network: this one then
        holds it alone until the block ends, and should remove the network."""
        assert self._fd is not None, "use NetworkHold in a with block"
        # Unlock first, then try: of two leaving together, the later one's try succeeds
        # (a shared-to-exclusive conversion could fail for both).
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases whatever lock it held
            self._fd = None
