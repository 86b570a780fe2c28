"""Locks for Coach's replay memory that cost no inter-process round trip.

Stock Coach builds its ReaderWriterLock from two `multiprocessing.Manager().Lock()`s (a
server process per lock, an IPC round trip per acquire/release) even when the memory is
not shared with another process.
"""
from __future__ import annotations

import threading
from multiprocessing import Manager


class LocalReaderWriterLock:
    """Coach's ReaderWriterLock for a memory that only this process uses: same protocol,
    in-process locks."""

    def __init__(self) -> None:
        self.num_readers_lock = threading.Lock()
        self.writers_lock = threading.Lock()
        self.num_readers = 0
        self.now_writing = False

    def some_worker_is_reading(self) -> bool:
        return self.num_readers > 0

    def some_worker_is_writing(self) -> bool:
        return self.now_writing is True

    def lock_writing_and_reading(self) -> None:
        self.writers_lock.acquire()
        self.now_writing = True

    def release_writing_and_reading(self) -> None:
        self.now_writing = False
        self.writers_lock.release()

    def lock_writing(self) -> None:
        with self.num_readers_lock:
            self.num_readers += 1

    def release_writing(self) -> None:
        with self.num_readers_lock:
            self.num_readers -= 1


class LazyManagerLock:
    """A `Manager().Lock()` created on first use (no server process for locks never used)."""

    def __init__(self) -> None:
        self._lock = None

    def _get(self):
        if self._lock is None:
            self._lock = Manager().Lock()
        return self._lock

    def acquire(self, *args, **kwargs):
        return self._get().acquire(*args, **kwargs)

    def release(self):
        return self._get().release()
