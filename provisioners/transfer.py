"""File transfer over one exec channel: remote hashes for many files in one command, then one tar stream.

A re-run moves almost no bytes and costs two round trips whatever the number of files. The
:class:`~polyvm.provisioners.connection.Connection` methods ``put``/``put_files``/``put_files_and_run``
forward here.
"""

from __future__ import annotations

import hashlib
import io
import secrets as _secrets
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Mapping, Sequence

import paramiko

from polyvm.errors import ConfigError, ProvisionError

from .exec import ChannelWriter, RunResult, StdinSource, default_name, encode_env, exec_command, raise_for_status, \
    secrets_for

if TYPE_CHECKING:
    from .connection import Connection


@dataclass
class Upload:
    """One file for :meth:`Connection.put_files`."""

    content: bytes | str | Path
    remote_path: str
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None

    def data(self) -> bytes:
        if isinstance(self.content, Path):
            return self.content.read_bytes()
        return self.content.encode() if isinstance(self.content, str) else bytes(self.content)


def put_files(conn: "Connection", uploads: Sequence[Upload], *, make_dirs: Sequence[str] = ()) -> list[bool]:
    """Copy many files on one exec channel, atomically, skipping those that already match.

    The remote side first reports which targets and directories exist plus the sha256, mode and owner
    of the existing targets (one ``sha256sum`` and one ``stat`` for all of them). Only if something
    differs does it receive a one-line plan and a single tar stream of the changed files under
    temporary names next to their targets, which are chown'ed and renamed into place.

    Returns one ``changed`` flag per upload; unchanged files cost no transfer at all.
    """
    return put_files_and_run(conn, uploads, make_dirs=make_dirs)[0]


def put_files_and_run(conn: "Connection", uploads: Sequence[Upload], *, make_dirs: Sequence[str] = (),
                      then: str | None = None, then_files: Sequence[Upload] = (),
                      env: Mapping[str, str] | None = None, timeout: float | None = None,
                      name: str | None = None, secrets: Sequence[str] = ()) -> tuple[list[bool], RunResult | None]:
    """:func:`put_files`, then (when the copy succeeded) run ``then`` in the same channel, saving an SSH
    session per step. ``then_files`` (e.g. a script) are always sent and not counted as copies; ``then``
    runs with stdin from /dev/null and ``env`` like :func:`polyvm.provisioners.exec.run`. Returns the flags and ``then``'s
    RunResult (None without ``then``); a non-zero exit of ``then`` raises CommandError.
    """
    if not uploads and not make_dirs and then is None:
        return [], None
    paths = [u.remote_path for u in uploads]
    if len(set(paths)) != len(paths):
        raise ConfigError("the same remote path is given twice in one copy")
    for p in [*paths, *make_dirs, *(u.remote_path for u in then_files)]:
        if not p or "\n" in p or "\0" in p:
            raise ConfigError(f"remote path must be a non-empty single line: {p!r}")
    for p in paths:
        if p.endswith("/"):
            raise ConfigError(f"remote path must name a file, not a directory: {p!r}")
    dirs = list(dict.fromkeys([*make_dirs, *(str(PurePosixPath(p).parent) for p in paths)]))
    datas = [u.data() for u in uploads]
    extra = [(u, u.data()) for u in then_files]
    changed: list[bool] = []
    sent: list[int] = []
    n, nd = len(paths), len(dirs)
    marker = f"__polyvm_copied_{_secrets.token_hex(6)}__"
    all_secrets = secrets_for(conn, secrets, env)

    def read_lines(chan: paramiko.Channel, out: bytearray, count: int) -> list[str] | None:
        while out.count(b"\n") < count:
            chunk = chan.recv(1 << 16)
            if not chunk:
                return None  # the remote side failed (sudo, missing tools): its stderr tells why
            out += chunk
        return bytes(out).decode(errors="replace").split("\n")[:count]

    def interact(chan: paramiko.Channel, out: bytearray) -> StdinSource:
        head = read_lines(chan, out, n + nd)
        if head is None:
            return None
        k = head[:n].count("f")
        lines = read_lines(chan, out, n + nd + 2 * k)
        if lines is None:
            return None
        del out[:]
        hashes = iter(lines[n + nd:n + nd + k])
        stats = iter(lines[n + nd + k:])
        send: list[tuple[Upload, bytes]] = []
        fix: list[Upload] = []
        for u, data, exists in zip(uploads, datas, lines[:n]):
            if exists == "f":
                digest = next(hashes).lstrip("\\")[:64]
                state = next(stats).split()
            else:
                digest, state = "", []
            if len(state) != 5 or digest != hashlib.sha256(data).hexdigest():
                send.append((u, data))
                changed.append(True)
            elif not _meta_matches(u, state):
                fix.append(u)
                changed.append(True)
            else:
                changed.append(False)
        missing = [d for d, e in zip(dirs, lines[n:n + nd]) if e != "d"]
        if not send and not fix and not missing and then is None:
            return None  # EOF right away: nothing to do, nothing sent
        sent[:] = [sum(len(d) for _, d in send), len(send)]
        plan, members = _upload_plan([*send, *extra], fix, missing)
        head_lines = plan.encode() + b"\n"
        if then is not None:
            head_lines += ((encode_env(env) if env else ":") + "\n").encode()

        def stream(w: ChannelWriter) -> None:
            w.write(head_lines)
            if members:
                with tarfile.open(fileobj=w, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore
                    now = int(time.time())
                    for name_, data, mode in members:
                        info = tarfile.TarInfo(name_)
                        info.size, info.mode, info.mtime = len(data), mode & 0o7777, now
                        tar.addfile(info, io.BytesIO(data))
        return stream

    # POSIX sh: one line per target (f: regular file, -: absent), one per directory (d / -), then one
    # sha256sum and one stat over the existing targets; then wait for the plan line (EOF: nothing to do).
    script = ('n=$1; shift; i=0; for f do shift; i=$((i+1)); if [ $i -le $n ]; then '
              'if [ -f "$f" ]; then echo f; set -- "$@" "$f"; else echo -; fi; '
              'elif [ -d "$f" ]; then echo d; else echo -; fi; done; '
              'if [ $# -gt 0 ]; then sha256sum -- "$@" || exit 1; '
              'stat -L -c "%a %U %G %u %g" -- "$@" || exit 1; fi; '
              'IFS= read -r __polyvm_plan || exit 0; ')
    if then is None:
        script += 'eval "$__polyvm_plan"'
    else:
        script += ('IFS= read -r __polyvm_env || exit 0; (eval "$__polyvm_plan") || exit $?; '
                   f'echo {marker}; eval "$__polyvm_env"; unset __polyvm_plan __polyvm_env; '
                   f'exec </dev/null; {then}')
    cmd = ("sh -c " + shlex.quote(script) + f" polyvm {n} "
           + " ".join(shlex.quote(p) for p in [*paths, *dirs]))
    wire = ("sudo -n -- " + cmd) if conn.sudo else cmd
    copy_label = f"copy {n} file(s)"
    if then is None:
        exec_command(conn, wire, None, timeout=timeout, check=True, label=copy_label, secrets=all_secrets,
                   interact=interact)
        result = None
    else:
        label = name or default_name(then, all_secrets)
        r = exec_command(conn, wire, None, timeout=timeout, check=False, label=f"{copy_label}, then {label!r}",
                       secrets=all_secrets, interact=interact)
        before, found, after = r.stdout.partition(marker + "\n")
        if not found:
            raise_for_status(conn, RunResult(r.exit_status or 1, before, r.stderr, r.duration), copy_label)
            raise ProvisionError(f"{conn.label}: {copy_label}: unexpected reply from the host")
        result = RunResult(r.exit_status, after, r.stderr, r.duration)
    if sent:
        conn.stats.bytes_uploaded += sent[0]
        conn.stats.files_uploaded += sent[1]
    conn.stats.files_skipped += changed.count(False)
    if result is not None:
        raise_for_status(conn, result, label, copy_flags=changed)  # the copies did go through
    return changed, result


def _upload_plan(send: Sequence[tuple[Upload, bytes]], fix: Sequence[Upload],
                 missing_dirs: Sequence[str]) -> tuple[str, list[tuple[str, bytes, int]]]:
    """One shell line that unpacks the tar stream on stdin into temporary names and renames them into place."""
    cmds = ["set -e"]
    if missing_dirs:
        cmds.append("umask 022")
        cmds.append("mkdir -p -- " + " ".join(shlex.quote(d) for d in missing_dirs))
    members: list[tuple[str, bytes, int]] = []
    for u, _ in send:
        p = PurePosixPath(u.remote_path)
        members.append((str(p.parent / f".{p.name}.polyvm-{_secrets.token_hex(4)}"), _, u.mode))
    if members:
        cmds.append("trap " + shlex.quote("rm -f -- " + " ".join(shlex.quote(m[0]) for m in members)) + " EXIT")
        # GNU tar: -P keeps absolute member names, -p sets each file's exact mode from the stream.
        cmds.append("umask 077")
        cmds.append("tar -xpPf - --no-same-owner")
        owners: dict[str, list[str]] = {}
        for (u, _), (tmp, _, _) in zip(send, members):
            who = _owner_spec(u)
            if who:
                owners.setdefault(who, []).append(tmp)
        cmds += [f"chown -- {shlex.quote(who)} " + " ".join(shlex.quote(t) for t in tmps)
                 for who, tmps in owners.items()]
        cmds += [f"mv -f -- {shlex.quote(tmp)} {shlex.quote(u.remote_path)}" for (u, _), (tmp, _, _) in
                 zip(send, members)]
    cmds += [_meta_cmds(u, u.remote_path) for u in fix]
    return "; ".join(cmds), members


def _owner_spec(u: Upload) -> str:
    return (u.owner or "") + (f":{u.group}" if u.group else "")


def _meta_cmds(u: Upload, path: str) -> str:
    q = shlex.quote(path)
    cmds = [f"chmod {u.mode & 0o7777:o} -- {q}"]
    if _owner_spec(u):
        cmds.append(f"chown -- {shlex.quote(_owner_spec(u))} {q}")
    return "; ".join(cmds)


def _meta_matches(u: Upload, state: Sequence[str]) -> bool:
    mode, user, grp, uid, gid = state
    if int(mode, 8) != (u.mode & 0o7777):
        return False
    if u.owner and u.owner not in (user, uid):
        return False
    if u.group and u.group not in (grp, gid):
        return False
    return True
