"""Files in a directory, for the channels that write them (``folder``, ``newsml``'s folder target).

One atomic write (a temporary file renamed into place, so readers never see half a file) with the mode a plain
``open()`` would give (``0o666`` less the umask: 0644 under the usual umask), where ``mkstemp`` alone makes
0600 and a web server or print system running as another user could not read the file. And one reading of
``OSError``: a full disk, an I/O error, a stale or briefly unmounted network share heal by themselves and are
retried; only what waiting cannot fix is a rejection.
"""

from __future__ import annotations

import errno
import os
import tempfile
from functools import cache
from pathlib import Path

from bridge.errors import ChannelRejected, ChannelUnavailable, ConfigError

# Errors the same write meets again however long it waits: the content (EFBIG), or a path that is wrong rather
# than unavailable (a file where a directory should be: ENOTDIR, EEXIST, EISDIR). Everything else (ENOSPC,
# EDQUOT, EIO, ESTALE, EACCES/EPERM on an unmounted share's mount point, EROFS after an error remount, ENOENT,
# timeouts…) may heal.
PERMANENT_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.EFBIG, errno.EINVAL, errno.ELOOP, errno.EXDEV, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}
)

# What a path through a folder that is not a directory gives: the folder a file (mkdir's EEXIST), or a file above
# it or at it (ENOTDIR), or a link loop on the way.
_FOLDER_GONE_ERRNOS = frozenset({errno.EEXIST, errno.ENOTDIR, errno.ELOOP})


def os_error(error: OSError, what: str, folder: Path | None = None) -> ChannelRejected | ChannelUnavailable:
    """``error`` as the bridge's taxonomy; ``what`` says which file operation failed, for the reason.

    ``folder`` is the channel's own folder: when it is no longer a directory (a file put where it was, or above it),
    the error is the whole channel's, not the item's, and waits like a share that is gone (retried, then parked once
    the breaker opens) instead of dead-lettering every story until someone notices."""
    name = errno.errorcode.get(error.errno or 0, "no errno")
    if folder is not None and error.errno in _FOLDER_GONE_ERRNOS and not folder.is_dir():
        return ChannelUnavailable(f"{what}: {folder} is not a directory ({name})")
    reason = f"{what}: {error.strerror or error} ({name})"
    if error.errno in PERMANENT_ERRNOS:
        return ChannelRejected(reason)
    return ChannelUnavailable(reason)


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file beside it, fsynced, then renamed over ``target``, and
    the folder fsynced.

    The one file write of every channel (folder, newsml's folder target). A reader sees the old file or the new
    one, never half of one. The bridge does not write it again once the channel reported success (its state says
    delivered), so both must reach the disk first: the file's fsync before the rename (no empty file after a
    crash), the folder's after it (the rename itself, else a power loss leaves the old file or none).
    """
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    sync_folder(target.parent)


# What a file system that cannot fsync a directory answers (some network shares, FUSE), or a drop-box folder the
# bridge may write but not read (EACCES on opening it): the rename is made, and this process can do no more.
_FOLDER_SYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES})


def sync_folder(folder: Path) -> None:
    """fsync ``folder``, so the renames and removals made in it survive a power loss (where the file system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return  # no folder, so nothing in it to make durable (a delete's files are gone with it)
    except OSError as error:
        if error.errno in _FOLDER_SYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _FOLDER_SYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def check_writable(path: Path, key: str) -> None:
    """Create the directory if needed and write a file into it; raise ``ConfigError`` naming ``key`` otherwise.

    Run at start-up: a folder that is missing and cannot be made, or is not a directory, is a configuration
    fault, better refused before the worker takes a message than found on every message.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".kordiam-bridge-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        name = errno.errorcode.get(error.errno or 0, "no errno")
        raise ConfigError(key, f"{path} is not a writable directory: {error.strerror or error} ({name})") from None


@cache
def file_mode() -> int:
    """``0o666`` less this process's umask (read once; the umask of a worker does not change)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # /proc says it without changing it; os.umask can only be read by setting it, which races other threads.
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current
