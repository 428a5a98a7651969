"""Running commands on exec channels: checked exit status, secrets masked, env on stdin, stderr tails.

Everything here works on one open :class:`~polyvm.provisioners.connection.Connection` (its methods
``run``/``get_text`` forward here); nothing opens connections or retries.
"""

from __future__ import annotations

import errno
import logging
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import paramiko

from polyvm.errors import CommandError

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("polyvm.provisioners.exec")

MASK = "********"
STDERR_TAIL_LINES = 15
STDERR_TAIL_CHARS = 2000
_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ABSENT_EXIT = 100  # get_text: the file does not exist
_SECRET_ENV_WORDS = ("PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PWD")


@dataclass
class RunResult:
    exit_status: int
    stdout: str
    stderr: str
    duration: float


class ChannelWriter:
    """File-like stdin of an exec channel, for streaming writers (tarfile)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self.sent = 0

    def write(self, data: bytes) -> int:
        self.chan.sendall(data)
        self.sent += len(data)
        return len(data)


StdinSource = bytes | str | Callable[[ChannelWriter], None] | None


def describe_error(exc: BaseException) -> str:
    """A short, human description of a network or SSH error (first line only)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host"
    if isinstance(exc, EOFError):
        return "connection closed during SSH handshake (EOF)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def exec_command(conn: "Connection", wire: str, stdin: StdinSource, *, timeout: float | None, check: bool, label: str,
                 secrets: Sequence[str], ok_statuses: Sequence[int] = (0,),
                 interact: Callable[[paramiko.Channel, bytearray], StdinSource] | None = None) -> RunResult:
    """Run ``wire`` verbatim on a new exec channel of this connection.

    ``interact(chan, out)``, when given, runs right after the command starts: it may read stdout into
    ``out`` and returns what to send on stdin (``stdin`` is then ignored).
    """
    t = conn._ensure()
    start = time.monotonic()
    log.debug("%s: run %s", conn.label, mask(wire, secrets)[:500])
    try:
        chan = t.open_session(timeout=conn.args.connect_timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise CommandError(f"{conn.label}: cannot open a session for {label!r}: {mask(describe_error(exc), secrets)}",
                           host=conn.host, command=label) from None
    conn.stats.channels += 1
    out, err = bytearray(), bytearray()
    writer_error: list[BaseException] = []
    end = None if timeout is None else start + timeout
    writer: threading.Thread | None = None
    try:
        chan.fileno()  # enables select() on the channel
        chan.exec_command(wire)
        if interact is not None:
            chan.settimeout(timeout if timeout is not None else max(60.0, conn.args.connect_timeout))
            try:
                stdin = interact(chan, out)
            except socket.timeout:
                raise CommandError(f"{conn.label}: no reply from {label!r}", host=conn.host,
                                   command=label) from None
            chan.settimeout(None)
        writer = _start_stdin(conn, chan, stdin, writer_error)
        while True:
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            if chan.eof_received or chan.closed:
                break
            wait = 1.0 if end is None else min(1.0, end - time.monotonic())
            if wait <= 0:
                chan.close()
                err_s = mask(err.decode(errors="replace"), secrets)
                raise CommandError(f"{conn.label}: {label!r} timed out after {timeout:g}s" + _tail_suffix(err_s),
                                   host=conn.host, command=label, stderr_tail=tail(err_s))
            select.select([chan], [], [], wait)
            if not t.is_active():
                break
        while chan.recv_ready():
            out += chan.recv(1 << 16)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(1 << 16)
        status_wait = 10.0 if end is None else max(0.1, end - time.monotonic())
        chan.status_event.wait(status_wait)
        status = chan.exit_status if chan.exit_status_ready() else -1
    finally:
        chan.close()
        if writer is not None:
            writer.join(5)
    stdout_s = mask(out.decode(errors="replace"), secrets)
    stderr_s = mask(err.decode(errors="replace"), secrets)
    duration = time.monotonic() - start
    if status == -1:
        if not t.is_active():
            raise CommandError(
                f"{conn.label}: connection lost while running {label!r} ({conn.lost_reason(t)})"
                + _tail_suffix(stderr_s), host=conn.host, command=label, stderr_tail=tail(stderr_s))
        raise CommandError(f"{conn.label}: {label!r} ended without an exit status (killed by a signal?)"
                           + _tail_suffix(stderr_s), host=conn.host, command=label, stderr_tail=tail(stderr_s))
    result = RunResult(status, stdout_s, stderr_s, duration)
    if check and status not in ok_statuses:
        raise_for_status(conn, result, label)
    if writer_error:
        # The command exited (with a status we checked) before reading all its input, e.g. a skipped
        # step or a command that ignores stdin; a lost connection would have left no exit status.
        log.debug("%s: %s did not read all of its input: %s", conn.label, label, describe_error(writer_error[0]))
    log.debug("%s: %s exited %d in %.2fs", conn.label, label, status, duration)
    return result


def _start_stdin(conn: "Connection", chan: paramiko.Channel, stdin: StdinSource,
                 errors: list[BaseException]) -> threading.Thread | None:
    def feed() -> None:
        try:
            if callable(stdin):
                stdin(ChannelWriter(chan))
            elif stdin:
                chan.sendall(stdin if isinstance(stdin, bytes) else stdin.encode())
            chan.shutdown_write()
        except Exception as exc:  # noqa: BLE001 - reported after the exit status is known
            errors.append(exc)

    small = stdin is None or (isinstance(stdin, (bytes, str)) and len(stdin) <= 1 << 18)
    if small:
        feed()  # fits in the channel window: no thread needed
        return None
    th = threading.Thread(target=feed, daemon=True, name=f"stdin-{conn.host}")
    th.start()
    return th


def raise_for_status(conn: "Connection", r: RunResult, label: str, *, copy_flags: Sequence[bool] | None = None) -> None:
    if r.exit_status == 0:
        return
    hint = ""
    if "sudo: a password is required" in r.stderr or "sudo: a terminal is required" in r.stderr:
        hint = f" (user {conn.user!r} needs password-less sudo)"
    raise CommandError(f"{conn.label}: {label!r} failed with exit code {r.exit_status}{hint}"
                       + _tail_suffix(r.stderr), host=conn.host, command=label, exit_code=r.exit_status,
                       stderr_tail=tail(r.stderr),
                       copy_flags=None if copy_flags is None else list(copy_flags))


#: Largest command line polyvm puts in an exec request instead of stdin. The command reaches the host as
#: one argument of the login shell (``sh -c COMMAND``, and again of ``sudo``'s ``sh -c``): Linux caps a
#: single argument at MAX_ARG_STRLEN = 32 pages (128 KiB, include/uapi/linux/binfmts.h) and all of them
#: at ARG_MAX (a quarter of the stack limit, 2 MiB by default, fs/exec.c); OpenSSH's sshd takes packets
#: of up to 256 KiB (PACKET_MAX_SIZE, packet.c). 32 KiB stays far below all three.
INLINE_LIMIT = 32 * 1024


def can_inline(conn: "Connection", wire: str, secrets: Sequence[str]) -> bool:
    """Whether ``wire`` may travel in the exec request: small enough, and holding no secret (a remote argv
    is readable by every user of the host through /proc/PID/cmdline)."""
    if len(wire.encode()) > INLINE_LIMIT or "\0" in wire:
        return False
    return not any(s and s in wire for s in conn.all_secrets(secrets))


def wrap_command(command: str, *, sudo: bool, env: Mapping[str, str] | None) -> str:
    """The command line sent to the host: ``env`` read from stdin first, the whole through ``sudo -n``."""
    if env:
        command = 'IFS= read -r __polyvm_env || exit 97; eval "$__polyvm_env"; unset __polyvm_env; ' + command
    if sudo:
        return "sudo -n -- sh -c " + shlex.quote(command)
    if env:
        return "sh -c " + shlex.quote(command)
    return command


def secrets_for(conn: "Connection", secrets: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
    """Everything to mask for one command: the connection's secrets, ``secrets`` and secret-looking env values."""
    return conn.all_secrets(list(secrets) + [str(v) for v in (env or {}).values()
                                              if len(str(v)) >= 4 and _looks_secret_env(env, v)])


def run(conn: "Connection", command: str, *, stdin: bytes | str | None = None, env: Mapping[str, str] | None = None,
        timeout: float | None = None, sudo: bool | None = None, check: bool = True, name: str | None = None,
        secrets: Sequence[str] = ()) -> RunResult:
    """:meth:`Connection.run <polyvm.provisioners.connection.Connection.run>`."""
    use_sudo = conn.sudo if sudo is None else sudo
    wire = wrap_command(command, sudo=use_sudo, env=env)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    if env:
        data = (encode_env(env) + "\n").encode() + (data or b"")
    all_secrets = secrets_for(conn, secrets, env)
    label = name or default_name(command, all_secrets)
    return exec_command(conn, wire, data, timeout=timeout, check=check, label=label, secrets=all_secrets)


def get_text(conn: "Connection", remote_path: str, *, sudo: bool | None = None) -> str | None:
    """Content of a remote text file, or None when it does not exist."""
    q = shlex.quote(remote_path)
    cmd = f"if [ -e {q} ]; then exec cat -- {q}; else exit {_ABSENT_EXIT}; fi"
    use_sudo = conn.sudo if sudo is None else sudo
    r = exec_command(conn, wrap_command(cmd, sudo=use_sudo, env=None), None, timeout=conn.args.command_timeout,
                     check=True, label=f"read {remote_path}", secrets=conn.all_secrets(), ok_statuses=(0, _ABSENT_EXIT))
    return None if r.exit_status == _ABSENT_EXIT else r.stdout


def _tail_suffix(stderr: str) -> str:
    t = tail(stderr)
    return f"; stderr tail:\n{t}" if t else ""


def default_name(command: str, secrets: Sequence[str]) -> str:
    first = mask(command.strip(), secrets).splitlines()[0] if command.strip() else "(empty command)"
    return first if len(first) <= 80 else first[:77] + "..."


def _looks_secret_env(env: Mapping[str, str] | None, value: object) -> bool:
    """Environment values whose names say they are secret are masked even if not listed in ``secrets``."""
    return any(any(w in k.upper() for w in _SECRET_ENV_WORDS) for k, v in (env or {}).items() if v == value)


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``********`` (longest first, so overlapping secrets mask fully)."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def tail(text: str, lines: int = STDERR_TAIL_LINES, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text`` (at most ``chars`` characters), trailing blanks removed."""
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out[-chars:]


def encode_env(env: Mapping[str, str]) -> str:
    """One shell line that exports ``env``; read from stdin so values never appear in a remote argv."""
    parts = ["__polyvm_nl=$(printf '\\nx'); __polyvm_nl=${__polyvm_nl%x}"]
    for k, v in env.items():
        if not k or k[0].isdigit() or not set(k) <= _ENV_NAME_OK:
            raise ValueError(f"invalid environment variable name {k!r}")
        pieces = [shlex.quote(p) for p in str(v).split("\n")]
        parts.append(f"export {k}=" + '"$__polyvm_nl"'.join(pieces))
    parts.append("unset __polyvm_nl")
    return "; ".join(parts)
