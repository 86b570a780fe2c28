"""Every job's model.tar.gz and output.tar.gz kept, when jobs share a file:// output path.

The SDK's local mode writes a job's archives straight into a file:// ``output_path``
(``<output_path>/model.tar.gz``), so a second job with the same path replaced the first
job's model and output without a word, even when the second job failed (the SDK copies the
archives out in a ``finally``). The cloud writes ``<output_path>/<job>/output/model.tar.gz``
and never replaces one job's archives with another's.

Here both layouts are kept: after each job its archives are at the SDK's place, where code
written for local mode reads them (``<output_path>/model.tar.gz`` is always the newest job's),
and also at the cloud's place, ``<output_path>/<job>/output/``, which stays that job's for
good. The second copy is a hard link (no extra disk space; a plain copy where the filesystem
has no hard links). Before the next job writes, the SDK's names are unlinked, so that its
copy cannot write through a link into the kept one; an archive there that no job folder
holds (left by the plain SDK, or put there by hand) is kept first under
``<output_path>/earlier-<its time>/output/``. A job that writes nothing (refused before it
started) leaves the previous archives where they were. A job name used twice on one output
path is refused, as the cloud refuses it.

Standard library only; the session calls ``before()`` and ``after()`` around each job.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from emulator import contract
from emulator.errors import UserError

logger = logging.getLogger(__name__)

ARCHIVES = (contract.MODEL_ARCHIVE, contract.OUTPUT_ARCHIVE)
EARLIER_PREFIX = "earlier-"


class JobNameReusedError(UserError):
    """A job's archives would replace those of an earlier job of the same name."""


def shared_output_folder(output_uri: str, job_name: str) -> Path | None:
    """The folder of a file:// `output_uri` that other jobs may share; None for other schemes
    and for a folder named after the job (the emulator's own per-job folders)."""
    parsed = urlparse(output_uri)
    if parsed.scheme != "file":
        return None
    folder = Path(os.path.abspath(parsed.netloc + parsed.path))
    return None if folder.name == job_name else folder


def job_folder(folder: Path, job_name: str) -> Path:
    """Where a job's archives are kept: the cloud's `<output_path>/<job>/output/`."""
    return folder / job_name / "output"


class KeptArtifacts:
    """``before()`` and ``after()`` one job that writes to the shared output `folder`."""

    def __init__(self, folder: Path, job_name: str):
        self.folder, self.job_name = folder, job_name
        self.unlinked: dict[str, Path] = {}  # SDK name -> the kept copy it was
        self.made_room = False

    def before(self) -> None:
        """Makes room for the job's archives at the SDK's names, keeping the earlier ones.

        Raises:
            JobNameReusedError: archives of a job of this name are already kept here.
        """
        mine = job_folder(self.folder, self.job_name)
        if any((mine / name).exists() for name in ARCHIVES):
            raise JobNameReusedError(
                f"A job named {self.job_name} already wrote its archives to {mine}; a second job of that name would "
                "replace them (the cloud refuses a reused job name too). Give the job a new name (fit(job_name=...) "
                "or none), or delete that folder.")
        for name in ARCHIVES:
            top = self.folder / name
            if not top.is_file():
                continue
            kept = self._kept_copy_of(top) or self._keep(top, self._earlier_folder(top) / name)
            top.unlink()
            self.unlinked[name] = kept
        self.made_room = True

    def after(self) -> Path | None:
        """Keeps what the job wrote under its own folder; puts the earlier archives back if it
        wrote nothing. Returns the kept model archive of this job, if it wrote one."""
        if not self.made_room:  # before() refused the job: nothing here is this job's
            return None
        mine = job_folder(self.folder, self.job_name)
        for name in ARCHIVES:
            top = self.folder / name
            if top.is_file():
                self._keep(top, mine / name)
            elif name in self.unlinked and self.unlinked[name].is_file():
                _link_or_copy(self.unlinked[name], top)
        model = mine / contract.MODEL_ARCHIVE
        return model if model.is_file() else None

    def _kept_copy_of(self, top: Path) -> Path | None:
        """A job folder's copy of `top`: the same file (a hard link), or one of the same size
        and time (a copy, where there are no hard links)."""
        stat = top.stat()
        for candidate in self.folder.glob(f"*/output/{top.name}"):
            other = candidate.stat()
            if os.path.samestat(stat, other) or (stat.st_size, stat.st_mtime_ns) == (other.st_size, other.st_mtime_ns):
                return candidate
        return None

    def _earlier_folder(self, top: Path) -> Path:
        stamp = datetime.fromtimestamp(top.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        return self.folder / f"{EARLIER_PREFIX}{stamp}" / "output"

    def _keep(self, top: Path, kept: Path) -> Path:
        kept.parent.mkdir(parents=True, exist_ok=True)
        if kept.exists():
            # Two earlier archives of the same second: the second gets its own name.
            kept = kept.with_name(f"{kept.name.removesuffix('.tar.gz')}-{top.stat().st_ino}.tar.gz")
        _link_or_copy(top, kept)
        if kept.parent.parent.name.startswith(EARLIER_PREFIX):
            logger.warning("Kept %s, which no job folder held, as %s before a new job writes there.", top, kept)
        return kept


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links on this filesystem (or across devices)
        shutil.copy2(source, target)
