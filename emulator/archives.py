"""Model archives checked before anything is unpacked on the host.

The SDK's local mode unpacks a served model's archive on the host (next to a file://
archive, or in a temp folder for s3://) with no limit on its size or its number of files:
a 6.3 MB gzip of zeros that unpacks to 5.5 GB filled the disk by 5.5 GB. Python's "data"
tar filter does refuse `..` members and links that leave the folder, but with a traceback
and after writing the members before them. ``check_model_archive`` reads only the tar
headers (decompressing the stream, writing nothing) and refuses, with one line saying what
to do:

* a file that is not gzip, or not a tar inside, or cut short;
* an archive with no files (what an interrupted job can leave);
* more than 4 GiB unpacked in all, more than 10,000 members, or (past 256 MiB) more than
  100 unpacked bytes per packed byte;
* absolute names, names with ``..``, symbolic and hard links, devices, FIFOs and sparse files
  (a model is plain files and folders).

Why these numbers: an exported Coach policy is one to three files under 1 MB, and MXNet or
ONNX models of ordinary networks are tens of MB, so 4 GiB and 10,000 files are far above any
model this emulator serves while a refused archive cannot fill a laptop's disk. Weights
compress about 1.1:1 and JSON or code about 5:1; only long runs of one byte pass 100:1
(gzip's ceiling is about 1,030:1), and the ratio is what refuses a bomb split into many
members early, before 4 GiB of it were decompressed. ``SMRL_MODEL_MAX_GIB``,
``SMRL_MODEL_MAX_FILES`` and ``SMRL_MODEL_MAX_RATIO`` raise the limits.

Each header is checked before the data behind it is read, so the scan stops at the first
member over a limit. Measured (benchmarks/test_archive_check.py, medians, 2-core machine):
0.34 ms for a CartPole policy's archive; 0.18 ms to refuse 5.5 GB of zeros in one member
(5.3 MB packed); 2.7 s to refuse the same split into 55 members, the ratio stopping it after
600 MB decompressed in memory. Standard library only.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from emulator.errors import UserError

MAX_GIB_ENV = "SMRL_MODEL_MAX_GIB"
MAX_FILES_ENV = "SMRL_MODEL_MAX_FILES"
MAX_RATIO_ENV = "SMRL_MODEL_MAX_RATIO"
_GIB = 1024**3
# Past this many unpacked bytes the ratio limit applies: small archives of zeros are harmless.
RATIO_FLOOR_BYTES = 256 * 1024**2
_GZIP_MAGIC = b"\x1f\x8b"


class ModelArchiveError(UserError, ValueError):
    """A model archive that is refused before unpacking; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """What a model archive may unpack to."""

    max_gib: float = 4.0
    max_files: int = 10_000
    max_ratio: float = 100.0  # unpacked bytes per packed byte, past RATIO_FLOOR_BYTES

    @property
    def max_bytes(self) -> int:
        return int(self.max_gib * _GIB)

    @classmethod
    def from_environment(cls) -> Limits:
        """The defaults, or what SMRL_MODEL_MAX_GIB, SMRL_MODEL_MAX_FILES and SMRL_MODEL_MAX_RATIO set.

        Raises:
            ModelArchiveError: one of them is set to something that is not a positive number.
        """
        values: dict[str, float] = {}
        for field, name, parse in (("max_gib", MAX_GIB_ENV, float), ("max_files", MAX_FILES_ENV, int),
                                   ("max_ratio", MAX_RATIO_ENV, float)):
            text = os.environ.get(name)
            if not text:
                continue
            try:
                values[field] = parse(text)
            except ValueError:
                values[field] = 0
            if values[field] <= 0:
                raise ModelArchiveError(f"{name}={text!r} is not a positive number. Set it to e.g. "
                                        f"{getattr(cls(), field)} or unset it.")
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ArchiveSummary:
    """What a checked archive holds."""

    files: int
    unpacked_bytes: int


def check_model_archive(path: str | os.PathLike, limits: Limits | None = None) -> ArchiveSummary:
    """Reads the headers of the model archive at `path` and refuses what would be unsafe to
    unpack; writes nothing.

    Args:
        path: A model.tar.gz (a path, not a URI).
        limits: Default: ``Limits.from_environment()``.

    Raises:
        ModelArchiveError: the archive is missing, not a gzip tar, empty, over a limit, or
            holds a member that would land outside its folder or is not a plain file or folder.
    """
    limits = limits or Limits.from_environment()
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "nothing"
        raise ModelArchiveError(f"Model archive {path}: there is {what} there. Pass the path of a model.tar.gz "
                                "file that a training job wrote.")
    packed = path.stat().st_size
    with open(path, "rb") as stream:
        magic = stream.read(2)
    if magic != _GZIP_MAGIC:
        raise ModelArchiveError(f"Model archive {path} is not gzip-compressed. A model must be a .tar.gz as a training "
                                "job writes it: `tar -czf model.tar.gz -C MODEL_FOLDER .`")
    files, unpacked = 0, 0
    try:
        with tarfile.open(path, "r:gz") as tar:
            # Each header is checked before the data behind it is read: the scan reads no
            # further than the first member over a limit.
            for member in tar:
                files += 1
                unpacked += member.size
                _check_member(path, member)
                _check_totals(path, files, unpacked, packed, limits)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ModelArchiveError(f"Model archive {path} is damaged or not a tar inside its gzip ({error}). "
                                "Use the model.tar.gz a training job wrote, or pack it again: "
                                "`tar -czf model.tar.gz -C MODEL_FOLDER .`") from None
    if files == 0:
        raise ModelArchiveError(f"Model archive {path} is empty: no model in it (an interrupted job can leave one). "
                                "Train again, or pass another archive.")
    return ArchiveSummary(files=files, unpacked_bytes=unpacked)


def _check_totals(path: Path, files: int, unpacked: int, packed: int, limits: Limits) -> None:
    refused = "refused before unpacking. If it is a real model, raise the limit:"
    if files > limits.max_files:
        raise ModelArchiveError(f"Model archive {path} holds more than {limits.max_files:,} files; {refused} "
                                f"{MAX_FILES_ENV}=N.")
    if unpacked > limits.max_bytes:
        raise ModelArchiveError(f"Model archive {path} unpacks to more than {limits.max_gib:g} GiB "
                                f"({packed:,} bytes packed); {refused} {MAX_GIB_ENV}=N.")
    if unpacked > RATIO_FLOOR_BYTES and unpacked > limits.max_ratio * packed:
        raise ModelArchiveError(f"Model archive {path} unpacks to over {limits.max_ratio:g} times its size "
                                f"({unpacked:,} bytes so far from {packed:,}), as a gzip bomb does; {refused} "
                                f"{MAX_RATIO_ENV}=N.")


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuses a member that would land outside the unpacked folder, or is not a plain file or folder."""
    name = member.name
    kind = None
    if member.issym():
        kind = f"a symbolic link (to {member.linkname!r})"
    elif member.islnk():
        kind = f"a hard link (to {member.linkname!r})"
    elif member.ischr() or member.isblk():
        kind = "a device file"
    elif member.isfifo():
        kind = "a FIFO"
    elif member.issparse():
        kind = "a sparse file"
    elif not (member.isfile() or member.isdir()):
        kind = f"of tar type {member.type!r}"
    if kind:
        raise ModelArchiveError(f"Model archive {archive}: member {name!r} is {kind}; a model holds only plain files "
                                "and folders. Pack the files themselves (tar -h follows links).")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ModelArchiveError(f"Model archive {archive}: member {name!r} has an absolute name and would be "
                                "unpacked outside the model folder. Pack with relative names: "
                                "`tar -czf model.tar.gz -C MODEL_FOLDER .`")
    if ".." in posix.parts:
        raise ModelArchiveError(f"Model archive {archive}: member {name!r} leaves the model folder ('..'). "
                                "Pack with names inside the folder: `tar -czf model.tar.gz -C MODEL_FOLDER .`")
