"""The spot-interruption drill: stop a running training job the way SageMaker does.

SageMaker stops a training container (a spot instance taken back, a StopTrainingJob) with
SIGTERM and kills it ``contract.STOP_GRACE_SECONDS`` later; a managed spot job then starts
again on a new instance, with its checkpoint folder restored. ``Interrupter`` does the first
half to one attempt of a local job, from a thread, ``after_s`` seconds after its container
started; ``emulator.session`` does the second (a new container, the checkpoints restored).

Plans come from ``smrl-local train --interrupt-after``, ``local_session(interrupt_after=...)``
or, for any Python job or notebook, the variable ``SMRL_INTERRUPT_AFTER`` ("30" or "30,45":
one interruption per number, each that many seconds into its attempt).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import docker
import docker.errors

from emulator import contract
from emulator.containers import containers_of
from emulator.inputs import INTERRUPT_AFTER_ENV, parse_interrupt_plan

_POLL_S = 0.1


def plan_from_environment() -> list[float]:
    """The drill asked for by ``SMRL_INTERRUPT_AFTER`` (none when unset)."""
    return parse_interrupt_plan(os.environ.get(INTERRUPT_AFTER_ENV), INTERRUPT_AFTER_ENV)


@dataclass
class Interruption:
    """One stop of one attempt: when SIGTERM went, how long the job took to exit, whether
    SIGKILL was needed, and its exit status."""

    attempt: int
    after_s: float
    after_log: str | None = None
    stopped_in_s: float | None = None
    killed: bool = False
    exit_code: int | None = None
    resumed: str | None = None  # the restarted attempt's "Resumed from checkpoint" line, if any

    def stop(self) -> str:
        """How the attempt stopped."""
        how = (f"killed (SIGKILL) {self.stopped_in_s or 0:.1f} s after SIGTERM" if self.killed
               else f"exited {self.exit_code} {self.stopped_in_s or 0:.1f} s after SIGTERM")
        when = f"{self.after_s:g} s into attempt {self.attempt}"
        if self.after_log:
            when = f"when attempt {self.attempt} first logged {self.after_log!r}"
        return f"interruption {self.attempt}: SIGTERM {when}, {how}"

    def describe(self) -> str:
        """How the attempt stopped and what the next one restored."""
        return f"{self.stop()}; {self.resumed or 'the next attempt restored no checkpoint: it trained from scratch'}"


class Interrupter:
    """Sends SIGTERM to the containers of `hosts` `after_s` seconds after they run (or, with
    `after_log`, that long after their log first shows that text), and SIGKILL `grace_s`
    later if they are still running; ``fired`` says whether it did."""

    def __init__(self, client: docker.DockerClient, hosts: list[str], attempt: int, after_s: float,
                 grace_s: float = contract.STOP_GRACE_SECONDS, after_log: str | None = None):
        self.client, self.hosts, self.grace_s, self.after_log = client, hosts, grace_s, after_log
        self.record = Interruption(attempt=attempt, after_s=after_s, after_log=after_log)
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"interrupter-{attempt}", daemon=True)

    def _running(self) -> list:
        try:
            return [c for c in containers_of(self.client, self.hosts) if c.status == "running"]
        except docker.errors.NotFound:  # removed between list and inspect: it ended
            return []

    def _logged(self, text: str) -> bool:
        return any(text.encode() in container.logs() for container in self._running())

    def _triggered(self) -> bool:
        """Waits for the moment to stop the attempt; False when the attempt ended first."""
        while not self._running():
            if self._done.wait(_POLL_S):
                return False
        while self.after_log and not self._logged(self.after_log):
            if self._done.wait(_POLL_S * 2):
                return False
        return not self._done.wait(self.record.after_s) and bool(self._running())

    def _signal(self, signal: str | None) -> None:
        for container in self._running():
            try:
                container.kill(signal=signal) if signal else container.kill()
            except docker.errors.APIError:  # it exited meanwhile
                pass

    def _run(self) -> None:
        if not self._triggered():
            return
        self.fired = True
        signalled = time.monotonic()
        self._signal("SIGTERM")
        while self._running():
            if time.monotonic() - signalled >= self.grace_s:
                self.record.killed = True
                self._signal(None)
                break
            time.sleep(_POLL_S)
        self.record.stopped_in_s = time.monotonic() - signalled
        for container in containers_of(self.client, self.hosts):
            container.reload()
            self.record.exit_code = container.attrs.get("State", {}).get("ExitCode")

    def __enter__(self) -> Interrupter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
