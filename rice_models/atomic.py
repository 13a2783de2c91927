"""A folder of files that appears whole or not at all: stage beside it, then swap it in.

A partition of the lake (`lake/<asset>[/<profile>]/<partition>/`) holds several files that belong
together (a patient's channels). Writing them in place one by one lets a crash leave two new channels
beside two old ones. `StagedFolder` instead writes into a fresh sibling folder
`.<partition>.staging-<pid>-<random>` on the same filesystem and `publish()` exchanges it with the
final folder in one `renameat2(RENAME_EXCHANGE)` call (Linux >= 3.15; on a filesystem without it,
two renames, between which the folder is briefly missing, never mixed). Readers therefore see the
old set or the new set, never a mix. The old set, now under the staging name, is then deleted.

A process killed while staging leaves its staging folder behind; the next `StagedFolder` of the same
asset folder deletes every staging folder whose owner process is gone (`sweep`). Folders are created
owner-only (0700).
"""

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from rice_models.process import process_alive

OWNER_ONLY_UMASK = 0o077
"""Files and folders a rice process creates are readable by their owner only (0600 / 0700)."""
_STAGING = ".staging-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def owner_only_files() -> int:
    """Set the process umask to `OWNER_ONLY_UMASK` (inherited by the processes it starts: the Dagster
    webserver, daemon, code servers and run workers); return the previous umask."""
    return os.umask(OWNER_ONLY_UMASK)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths on one filesystem; False where the system cannot.

    Raises:
        OSError: the swap failed for another reason than missing support (e.g. a path is missing).
    """
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), f"{a} <-> {b}")


def _owner_alive(folder: Path) -> bool:
    """Whether the process named in a staging folder's name still runs."""
    try:
        pid = int(folder.name.split(_STAGING, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    return pid == os.getpid() or process_alive(pid)


def sweep(parent: Path) -> list[Path]:
    """Delete the staging folders under `parent` whose owner process is gone; return them."""
    if not parent.is_dir():
        return []
    stale = [p for p in parent.iterdir() if _STAGING in p.name and p.name.startswith(".")]
    stale = [p for p in stale if not _owner_alive(p)]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def stale_staging(root: Path) -> list[Path]:
    """Every staging folder under `root` (recursively) whose owner process is gone: crash leftovers."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(f".*{_STAGING}*") if p.is_dir() and not _owner_alive(p))


class StagedFolder:
    """Stage the files of `final` in a sibling folder and swap them in together (module docstring).

    Use as a context manager: `with StagedFolder(final) as staged: write into staged.dir; staged.publish()`.
    Leaving the block without `publish()` (an error) deletes the staged files and leaves `final` as it
    was. `final(name)` maps a staged file to its published path.

    Args:
        final: the folder the files belong in, e.g. `lake/raw_scans/P001`.
    """

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.dir = self.final.with_name(f".{self.final.name}{_STAGING}{os.getpid()}-{secrets.token_hex(4)}")
        self.published = False

    def __enter__(self) -> "StagedFolder":
        self.final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sweep(self.final.parent)
        self.dir.mkdir(mode=0o700)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, staged: Path) -> Path:
        """Where a file written under `self.dir` lives once published."""
        return self.final / Path(staged).relative_to(self.dir)

    def publish(self) -> Path:
        """Swap the staged folder in for `final` (which may not exist yet); return `final`.

        The previous contents are deleted after the swap. Publishing twice raises.
        """
        if self.published:
            raise RuntimeError(f"{self.final} already published")
        if self.final.exists():
            if not exchange(self.dir, self.final):
                old = self.dir.with_name(self.dir.name + "-old")
                os.rename(self.final, old)
                os.rename(self.dir, self.final)
                os.rename(old, self.dir)
        else:
            os.rename(self.dir, self.final)
        self.published = True
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
        return self.final
