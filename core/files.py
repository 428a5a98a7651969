"""Files shared by concurrent polyvm runs: atomic replacement and exclusive locks.

Several processes (two ``polyvm sandbox up``, a ``polyvm apply`` next to a ``sandbox up``) may touch the same
state files at once. Two rules keep them whole:

* :func:`atomic_write`: a file is replaced in one step (a unique temporary file in the same directory,
  flushed to disk, then ``os.replace``), so a reader sees the old or the new content, never a part, and two
  writers never share a temporary name;
* :func:`read_text`: an input file is read only when it is a regular file, and at most
  :data:`MAX_INPUT_BYTES` of it;
* :func:`locked`: a read-modify-write (load the passwords, add one, save them) or a "create if missing" runs
  under ``fcntl.flock`` on a lock file. The wait is bounded; while it lasts and when it runs out, the
  message names who holds the lock (pid and command line), which the holder writes into the lock file.
  The kernel drops the lock when its holder dies, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import ConfigError, LockTimeoutError

#: Seconds a lock is waited for by default before giving up with a message naming its holder.
DEFAULT_LOCK_TIMEOUT = 60.0

#: The most polyvm reads of an input file (spec, inventory, recipe inputs, settings): 4 MiB, far above any
#: real one (a spec with 1000 ingress rules is about 100 KiB), far below what would exhaust memory.
MAX_INPUT_BYTES = 4 * 1024 * 1024


def read_text(path: str | os.PathLike[str], *, what: str = "file", limit: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (``what`` names it in messages: "VM spec", "inventory").

    ConfigError (one line) when it is missing, a directory, not a regular file (a device such as /dev/zero,
    a FIFO, a socket: refused without reading, and opened without blocking), larger than ``limit`` bytes,
    binary (NUL bytes) or not UTF-8."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"cannot read {what} {p}: it does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"cannot read {what} {p}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"cannot read {what} {p}: not a regular file (a device, FIFO or socket)")
        if st.st_size > limit:
            raise ConfigError(f"{what} {p} is too large ({st.st_size} bytes; at most {limit})")
        chunks, size = [], 0
        while size <= limit:  # the size can change after fstat: never read more than limit + 1
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            except OSError as exc:
                raise ConfigError(f"cannot read {what} {p}: {exc.strerror}") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ConfigError(f"{what} {p} is too large (more than {limit} bytes)")
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if b"\0" in raw:
        raise ConfigError(f"{what} {p} is a binary file, not text (YAML)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start} is invalid)") from None


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step; the file has ``mode`` from its first byte on (0600 by
    default: state files hold keys and passwords). The directory must exist."""
    p = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(p.parent)


def file_path(path: str | os.PathLike[str], *, what: str, make_parent: bool = False) -> Path:
    """``path`` checked as the place of a file polyvm will write (a password or known_hosts file): not a
    directory, and in a directory that exists. With ``make_parent``, a missing last directory is created
    (0700) when its own parent exists; deeper missing directories are refused, never made silently.
    ConfigError naming ``what`` otherwise."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a directory")
    parent = p.parent
    # Make first, look after: another run may create the directory between any check and the mkdir (a
    # look-then-make order saw "not a directory" for a directory made a moment later).
    if make_parent and not parent.is_dir() and parent.parent.is_dir():
        try:
            parent.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"{what} {p}: cannot create {parent}: {exc.strerror}") from None
    if parent.is_dir():
        return p
    if parent.exists() or parent.is_symlink():
        raise ConfigError(f"{what} {p}: {parent} is not a directory")
    raise ConfigError(f"{what} {p}: directory {parent} does not exist")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it ("pid 123: polyvm sandbox up")."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not said who it is yet"


def _me() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = list(sys.argv)
    command = " ".join(argv)
    if len(command) > 300:
        command = command[:297] + "..."
    return f"pid {os.getpid()}: {command}"


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], *, what: str, timeout: float = DEFAULT_LOCK_TIMEOUT,
           on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created 0600; its directory must exist) for the block.

    ``what`` says what the lock protects (for messages). When another process holds it, ``on_wait`` is
    called once with who that is, and the lock is retried until ``timeout`` seconds have passed; then
    :class:`~polyvm.errors.LockTimeoutError` names the holder. Each call opens the lock file anew, so
    threads of one process exclude each other too (flock locks belong to the open file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.02
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError(what=what, path=str(path), holder=_holder(fd), waited=timeout)
            if not told and on_wait is not None:
                on_wait(_holder(fd))
                told = True
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_me() + "\n").encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
