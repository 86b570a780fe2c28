"""Who owns what the emulator creates, whether that owner still runs, and what a sweep removes.

Everything the emulator creates carries an owner: the process that created it, named by
its pid *and* its start time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot),
plus the machine's boot id and host name. A pid alone would be mistaken for the owner once
the kernel hands it to another process; the start time tells them apart, the boot id tells
a process of before a reboot from one now.

* Docker containers and networks carry the owner as labels (``labels()``);
* folders under the work folder get a sibling file ``<folder>.smrl-owner`` (never a file
  inside: the SDK copies some of those folders into the containers' /opt/ml);
* servers (the local S3 server, notebook kernels) get a pid file naming the server process
  (pid and start time too) and its owner.

An owner is ``alive``, ``dead``, or ``elsewhere`` (another host: it cannot be checked from
here, so nothing of it is ever removed). A sweep removes only what a *dead* owner left.
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ALIVE, DEAD, ELSEWHERE = "alive", "dead", "elsewhere"
LABEL_PREFIX = "org.smrl.owner."
# What the emulator created it as: "training", "endpoint", "network".
KIND_LABEL = "org.smrl.kind"
PORT_LABEL = "org.smrl.port"
OWNER_FILE_SUFFIX = ".smrl-owner"
# Pid files of servers, under the work folder.
SERVERS_DIR = "servers"
_PROC = Path("/proc")


def _default_program() -> str:
    """This process's name in messages until ``set_program``: its script, or "python"."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else None
    if script is None:
        return "python"
    return script.parent.name if script.name == "__main__.py" else script.name


_program = _default_program()


def set_program(name: str) -> None:
    """How this process is named in labels and messages, e.g. ``smrl-local train``."""
    global _program
    _program = name


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None when there is no such
    process (or no /proc: then owners are told apart by pid alone)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])  # field 22 overall; fields here start at field 3


def boot_id() -> str:
    """This boot of the machine; empty where the kernel does not say."""
    try:
        return (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    """A process that created something: pid, start time, boot, host, and its name."""

    pid: int
    start: int | None
    boot: str
    host: str
    program: str = "python"

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, start_ticks(pid), boot_id(), socket.gethostname(), _program)

    def state(self) -> str:
        """``alive``, ``dead`` or ``elsewhere``; see the module's docstring."""
        if self.host != socket.gethostname():
            return ELSEWHERE
        if self.boot and boot_id() and self.boot != boot_id():
            return DEAD  # the machine restarted since
        if self.start is None:
            return ALIVE if _pid_exists(self.pid) else DEAD
        return ALIVE if start_ticks(self.pid) == self.start else DEAD

    def describe(self) -> str:
        """E.g. ``smrl-local train pid 1234``."""
        return f"{self.program} pid {self.pid}"

    # -- as Docker labels --------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        return {f"{LABEL_PREFIX}{name}": "" if value is None else str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> Owner | None:
        """The owner recorded in `labels`; None when they record none (not ours, or older)."""
        labels = labels or {}
        pid = labels.get(f"{LABEL_PREFIX}pid", "")
        if not pid.isdigit():
            return None
        start = labels.get(f"{LABEL_PREFIX}start", "")
        return cls(int(pid), int(start) if start.isdigit() else None, labels.get(f"{LABEL_PREFIX}boot", ""),
                   labels.get(f"{LABEL_PREFIX}host", ""), labels.get(f"{LABEL_PREFIX}program", "") or "python")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Owner | None:
        try:
            return cls(int(data["pid"]), None if data.get("start") is None else int(data["start"]),
                       str(data.get("boot", "")), str(data.get("host", "")), str(data.get("program", "python")))
        except (KeyError, TypeError, ValueError):
            return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- folders -------------------------------------------------------------------------------

def owner_file(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.with_name(folder.name + OWNER_FILE_SUFFIX)


def claim_folder(folder: str | os.PathLike, owner: Owner | None = None) -> None:
    """Records `owner` (default: this process) as the owner of `folder`, which may not exist yet."""
    path = owner_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps((owner or Owner.current()).to_json()))


def release_folder(folder: str | os.PathLike) -> None:
    """Forgets the owner of `folder` (after the folder itself is gone)."""
    owner_file(folder).unlink(missing_ok=True)


@contextlib.contextmanager
def claimed(folder: str | os.PathLike) -> Iterator[None]:
    """`folder` is this process's within the block (for folders that the block removes)."""
    claim_folder(folder)
    try:
        yield
    finally:
        release_folder(folder)


def owned_folders(roots: Iterable[Path]) -> list[tuple[Path, Owner | None]]:
    """(folder, owner) for each owner file directly under `roots`; the owner is None when
    the file cannot be read (then nobody can prove the folder abandoned)."""
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.glob(f"*{OWNER_FILE_SUFFIX}")):
            try:
                owner = Owner.from_json(json.loads(path.read_text()))
            except (OSError, ValueError):
                owner = None
            found.append((path.with_name(path.name.removesuffix(OWNER_FILE_SUFFIX)), owner))
    return found


# -- servers -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Server:
    """A server process the emulator started (its pid and start time), and its owner."""

    name: str
    pid: int
    start: int | None
    owner: Owner
    pid_file: Path
    port: int | None = None

    def running(self) -> bool:
        """Whether the server process itself still runs (not another one with its pid)."""
        ticks = start_ticks(self.pid)
        return ticks is not None and (self.start is None or ticks == self.start)

    def stop(self) -> None:
        """SIGTERM to the server when it is still the process that was recorded."""
        if self.running():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def write_pid_file(folder: Path, name: str, pid: int, port: int | None = None) -> Path:
    """Records server process `pid`, owned by this process, as ``<folder>/<name>-<pid>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{pid}.json"
    path.write_text(json.dumps({"name": name, "pid": pid, "start": start_ticks(pid), "port": port,
                                "owner": Owner.current().to_json()}))
    return path


def read_pid_files(folder: Path) -> list[Server]:
    servers = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            owner = Owner.from_json(data["owner"])
            if owner is None:
                continue
            servers.append(Server(str(data["name"]), int(data["pid"]), data.get("start"), owner, path,
                                  data.get("port")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return servers


# -- sweeping: what to remove, and how to say it -------------------------------------------

@dataclass(frozen=True)
class Leftover:
    """One thing the emulator created: its kind ("container", "network", "temp folder",
    "server"), name, and owner (None: it records none, so it is never removed)."""

    kind: str
    name: str
    owner: Owner | None


def abandoned(things: Iterable[Leftover]) -> list[Leftover]:
    """What a sweep may remove: things whose owner is dead. Never what a live owner holds,
    what records no owner, or what belongs to a process on another host."""
    return [thing for thing in things if thing.owner is not None and thing.owner.state() == DEAD]


def _count(n: int, kind: str) -> str:
    return f"{n} {kind}" if n == 1 else f"{n} {kind}s"


def summary(removed: Iterable[Leftover]) -> list[str]:
    """One line per dead owner: ``removed 1 container, 2 temp folders left by smrl-local
    train pid 1234 (dead)``."""
    by_owner: dict[Owner, dict[str, int]] = {}
    for thing in removed:
        if thing.owner is not None:
            counts = by_owner.setdefault(thing.owner, {})
            counts[thing.kind] = counts.get(thing.kind, 0) + 1
    return [f"removed {', '.join(_count(n, kind) for kind, n in counts.items())} left by {owner.describe()} (dead)"
            for owner, counts in by_owner.items()]
