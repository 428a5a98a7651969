"""Steps: small objects that each change one thing on a host over a :class:`Connection` and say whether they did.

A recipe is a list of steps; :func:`run_steps` applies them in order on one connection, :func:`fanout`
(in fanout.py) on many hosts at once. Every step costs one exec channel on the shared connection.
"""

from __future__ import annotations

import os
import secrets as _secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping, Sequence

from polyvm.errors import CommandError, ConfigError, ProvisionError

from .connection import Connection
from .exec import RunResult, mask
from .transfer import Upload


@dataclass(frozen=True)
class StepResult:
    name: str
    changed: bool
    detail: str = ""
    output: RunResult | None = field(default=None, repr=False, compare=False)  # commands and scripts


@dataclass
class Combined:
    """A command step prepared to run in the same channel as the copies before it (see apply_steps)."""

    command: str
    files: list[Upload]
    env: Mapping[str, str] | None
    timeout: float | None
    name: str
    secrets: list[str]
    finish: Callable[[RunResult], StepResult]


@dataclass(frozen=True)
class DeclaredExec:
    """A step as one command to declare as a Pulumi ``RemoteExec``: the same text on every declaration (a
    changed command means "run again"); ``stdin`` may hold secrets (the resource keeps it secret)."""

    command: str
    stdin: str | None = None
    secret: bool = False
    #: Run again when a file copied by an earlier step of the same resource group changes (a reload).
    follows_files: bool = True


Declared = list[Upload] | DeclaredExec


class Step:
    """Base class: ``apply(conn)`` brings one thing to the wanted state and returns a StepResult.

    ``declared()`` is the same step for Pulumi (provisioners/pulumi.py): the files to copy (a list of
    Upload) or one command (DeclaredExec). Copy steps also implement ``uploads()``/``result(flags)``,
    which is how apply_steps batches consecutive copies into one channel.
    """

    name: str = "step"

    def apply(self, conn: Connection) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def declared(self) -> Declared:
        raise NotImplementedError(f"{type(self).__name__} has no Pulumi form")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _Copies(Step):
    """A step that only copies files: ``uploads()`` -> (uploads, directories to make) and ``result(flags)``
    (one changed flag per upload) are the batching protocol apply_steps uses."""

    def uploads(self) -> tuple[list[Upload], list[str]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def result(self, flags: Sequence[bool]) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, conn: Connection) -> StepResult:
        uploads, dirs = self.uploads()
        return self.result(conn.put_files(uploads, make_dirs=dirs))

    def declared(self) -> Declared:
        return self.uploads()[0]


class CopyFile(_Copies):
    """Copy one file (bytes, text or a local Path) to ``remote_path``; unchanged when the remote already matches."""

    def __init__(self, content_or_path: bytes | str | Path, remote_path: str, *, mode: int = 0o644,
                 owner: str | None = None, group: str | None = None, name: str | None = None) -> None:
        self.content = content_or_path
        self.remote_path = remote_path
        self.mode = mode
        self.owner = owner
        self.group = group
        self.name = name or f"copy {remote_path}"

    def uploads(self) -> tuple[list[Upload], list[str]]:
        return [Upload(self.content, self.remote_path, self.mode, self.owner, self.group)], []

    def result(self, flags: Sequence[bool]) -> StepResult:
        return StepResult(self.name, flags[0], "updated" if flags[0] else "already up to date")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a :class:`FilesStep`."""

    remote_path: str
    content: str | bytes
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None


class FilesStep(_Copies):
    """Several files copied atomically in one round trip as one step; unchanged files are not sent (content,
    mode and owner compared). Batched with neighbouring copies by apply_steps like CopyFile."""

    def __init__(self, name: str, files: Sequence[RemoteFile]) -> None:
        self.name = name
        self.files = list(files)

    def uploads(self) -> tuple[list[Upload], list[str]]:
        return [Upload(f.content, f.remote_path, f.mode, f.owner, f.group) for f in self.files], []

    def result(self, flags: Sequence[bool]) -> StepResult:
        changed = [f.remote_path for f, c in zip(self.files, flags) if c]
        return StepResult(self.name, bool(changed), ("updated " + ", ".join(changed)) if changed else "")


class CopyDir(_Copies):
    """Copy a local directory tree to ``remote_dir`` in one channel and one tar stream (changed files only).

    File modes are copied from the local files unless ``mode`` is given. Remote files that do not exist
    locally are left alone.
    """

    def __init__(self, local_dir: str | os.PathLike[str], remote_dir: str, *, mode: int | None = None,
                 owner: str | None = None, group: str | None = None, exclude: Sequence[str] = (),
                 name: str | None = None) -> None:
        self.local_dir = Path(local_dir)
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.mode = mode
        self.owner = owner
        self.group = group
        self.exclude = tuple(exclude)
        self.name = name or f"copy {self.local_dir}/ to {self.remote_dir}/"

    def uploads(self) -> tuple[list[Upload], list[str]]:
        if not self.local_dir.is_dir():
            raise ConfigError(f"{self.local_dir} is not a directory")
        uploads: list[Upload] = []
        dirs = [self.remote_dir]
        for root, dirnames, filenames in os.walk(self.local_dir):
            rel_root = Path(root).relative_to(self.local_dir)
            dirnames[:] = sorted(d for d in dirnames if not self._excluded(rel_root / d))
            for d in dirnames:
                dirs.append(str(PurePosixPath(self.remote_dir, *(rel_root / d).parts)))
            for f in sorted(filenames):
                rel = rel_root / f
                if self._excluded(rel):
                    continue
                local = Path(root) / f
                mode = self.mode if self.mode is not None else (local.stat().st_mode & 0o777)
                uploads.append(Upload(local, str(PurePosixPath(self.remote_dir, *rel.parts)), mode,
                                      self.owner, self.group))
        return uploads, dirs

    def _excluded(self, rel: Path) -> bool:
        return any(rel.match(pat) for pat in self.exclude)

    def result(self, flags: Sequence[bool]) -> StepResult:
        n = sum(flags)
        return StepResult(self.name, n > 0, f"{n} of {len(flags)} file(s) updated")


ChangedWhen = str | Callable[[RunResult], bool]


class RunCommand(Step):
    """Run a shell command. ``creates``: skip when that remote path exists; ``unless``: skip when that command
    exits 0 (both checked in the same channel as the command). ``changed_when``: "always", "never" or a
    function of the RunResult.
    """

    def __init__(self, command: str, *, name: str | None = None, stdin: bytes | str | None = None,
                 env: Mapping[str, str] | None = None, creates: str | None = None, unless: str | None = None,
                 changed_when: ChangedWhen = "always", secrets: Sequence[str] = (), sudo: bool | None = None,
                 timeout: float | None = None) -> None:
        if isinstance(changed_when, str) and changed_when not in ("always", "never"):
            raise ConfigError(f"changed_when must be 'always', 'never' or a function, not {changed_when!r}")
        self.command = command
        self.stdin = stdin
        self.env = dict(env or {})
        self.creates = creates
        self.unless = unless
        self.changed_when = changed_when
        self.secrets = list(secrets)
        self.sudo = sudo
        self.timeout = timeout
        self.name = name or mask(command.strip().splitlines()[0] if command.strip() else command, self.secrets)[:80]

    def _command(self) -> tuple[str, str]:
        marker = f"__polyvm_skipped_{_secrets.token_hex(6)}__"
        guards = []
        if self.creates:
            guards.append(f"if [ -e {shlex.quote(self.creates)} ]; then echo {marker}c; exit 0; fi")
        if self.unless:
            guards.append(f"if ( {self.unless} ) >/dev/null 2>&1 </dev/null; then echo {marker}u; exit 0; fi")
        return ("; ".join(guards + [self.command]) if guards else self.command), marker

    def declared(self) -> Declared:
        guards = []
        if self.creates:
            guards.append(f"if [ -e {shlex.quote(self.creates)} ]; then exit 0; fi")
        if self.unless:
            guards.append(f"if ( {self.unless} ) >/dev/null 2>&1 </dev/null; then exit 0; fi")
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        command = "; ".join(guards + [f"export {env}; {self.command}" if env else self.command])
        stdin = self.stdin.decode() if isinstance(self.stdin, bytes) else self.stdin
        return DeclaredExec(command, stdin, secret=bool(self.secrets))

    def _finish(self, r: RunResult, marker: str) -> StepResult:
        out = r.stdout.strip()
        if out in (marker + "c", marker + "u"):
            why = f"{self.creates} exists" if out.endswith("c") else "'unless' command succeeded"
            return StepResult(self.name, False, f"skipped: {why}", r)
        return StepResult(self.name, _changed(self.changed_when, r), _summary(r), r)

    def combined(self, conn: Connection) -> Combined | None:
        if self.stdin is not None or (self.sudo is not None and self.sudo != conn.sudo):
            return None
        command, marker = self._command()
        return Combined(command, [], self.env or None, self.timeout, self.name, self.secrets,
                        lambda r: self._finish(r, marker))

    def apply(self, conn: Connection) -> StepResult:
        command, marker = self._command()
        r = conn.run(command, stdin=self.stdin, env=self.env or None, timeout=self.timeout, sudo=self.sudo,
                     name=self.name, secrets=self.secrets)
        return self._finish(r, marker)


class Script(Step):
    """Upload a script and run it with ``interpreter`` in one channel; the temporary file is removed after.

    With ``changed_marker``, the step counts as changed only if the script prints that line on stdout.
    ``detail``: "summary" (exit status, time, last line) or "output" (the script's lines but the marker).
    """

    def __init__(self, content: str | bytes, *, name: str = "script", stdin: bytes | str | None = None,
                 interpreter: str = "/bin/sh", changed_marker: str | None = None,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (), secrets: Sequence[str] = (),
                 sudo: bool | None = None, timeout: float | None = None, detail: str = "summary") -> None:
        if detail not in ("summary", "output"):
            raise ConfigError(f"detail must be 'summary' or 'output', not {detail!r}")
        self.detail = detail
        self.content = content.encode() if isinstance(content, str) else bytes(content)
        self.name = name
        self.stdin = stdin
        self.interpreter = interpreter
        self.changed_marker = changed_marker
        self.env = dict(env or {})
        self.args = list(args)
        self.secrets = list(secrets)
        self.sudo = sudo
        self.timeout = timeout

    def command(self) -> tuple[str, bytes]:
        """The remote command and its stdin (script, then the caller's stdin)."""
        user_stdin = self.stdin.encode() if isinstance(self.stdin, str) else (self.stdin or b"")
        # GNU head -c reads exactly N bytes from a pipe, leaving the caller's stdin for the script.
        take = f"head -c {len(self.content)}" if user_stdin else "cat"
        args = " ".join(shlex.quote(a) for a in self.args)
        # A private temporary file without spawning mktemp: random name, created exclusively (noclobber)
        # with umask 077 in a subshell, so the script itself keeps the login umask.
        tmp = f'"${{TMPDIR:-/tmp}}/.polyvm-script-{_secrets.token_hex(8)}"'
        cmd = (f"__polyvm_t={tmp}; trap 'rm -f \"$__polyvm_t\"' EXIT; "
               f'(umask 077; set -C; exec {take} > "$__polyvm_t") || exit 1; '
               f'{self.interpreter} "$__polyvm_t" {args}' + ("" if user_stdin else " </dev/null"))
        return cmd, self.content + user_stdin

    def declared(self) -> Declared:
        """The script arrives first on stdin, then the step's own stdin: the command is the same on every
        declaration, the script's content is in stdin."""
        user_stdin = self.stdin.decode() if isinstance(self.stdin, bytes) else (self.stdin or "")
        take = f"head -c {len(self.content)}" if user_stdin else "cat"
        args = " ".join(shlex.quote(a) for a in self.args)
        env = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        command = (f"t=$(mktemp) || exit 1; trap 'rm -f \"$t\"' EXIT; {take} > \"$t\" || exit 1; "
                   f"{env}{self.interpreter} \"$t\" {args}".rstrip() + ("" if user_stdin else " </dev/null"))
        return DeclaredExec(command, self.content.decode() + user_stdin, secret=bool(self.secrets))

    def _finish(self, r: RunResult) -> StepResult:
        lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
        changed = True if self.changed_marker is None else self.changed_marker in lines
        if self.detail == "output":  # the script's own lines (but the marker) say what it did
            return StepResult(self.name, changed, "; ".join(ln for ln in lines if ln != self.changed_marker), r)
        return StepResult(self.name, changed, _summary(r), r)

    def combined(self, conn: Connection) -> Combined | None:
        if self.stdin is not None or (self.sudo is not None and self.sudo != conn.sudo):
            return None
        path = f"/tmp/.polyvm-script-{_secrets.token_hex(8)}"
        args = " ".join(shlex.quote(a) for a in self.args)
        command = f"{self.interpreter} {path} {args}; __polyvm_rc=$?; rm -f -- {path}; exit $__polyvm_rc"
        return Combined(command, [Upload(self.content, path, 0o700)], self.env or None, self.timeout, self.name,
                        self.secrets, self._finish)

    def apply(self, conn: Connection) -> StepResult:
        cmd, data = self.command()
        r = conn.run(cmd, stdin=data, env=self.env or None, timeout=self.timeout, sudo=self.sudo, name=self.name,
                     secrets=self.secrets)
        return self._finish(r)


#: Steps that only copy files: apply_steps sends consecutive ones together.
COPY_STEPS = (_Copies,)
CopyStep = _Copies


def _changed(rule: ChangedWhen, r: RunResult) -> bool:
    if rule == "always":
        return True
    if rule == "never":
        return False
    return bool(rule(r))  # type: ignore[operator]


def _summary(r: RunResult) -> str:
    last = r.stdout.strip().splitlines()[-1:] or [""]
    return (f"exit {r.exit_status} in {r.duration:.2f}s" + (f": {last[0][:120]}" if last[0] else ""))


def apply_steps(conn: Connection, steps: Sequence[Step]) -> Iterator[tuple[Step, StepResult]]:
    """Apply ``steps`` in order, yielding each step's result as it completes.

    Consecutive copy steps (CopyFile, CopyDir) travel together: one channel and one tar stream for all
    of them, each still reporting its own result; a RunCommand or Script right after them (without stdin)
    runs in that same channel once the copies succeeded. A failure raises the ProvisionError with its
    declared ``step`` (the failed step's name) and ``results`` (what completed before) set.
    """
    done: list[StepResult] = []
    i = 0
    while i < len(steps):
        batch: list[CopyStep] = []
        while i + len(batch) < len(steps) and isinstance(steps[i + len(batch)], COPY_STEPS):
            batch.append(steps[i + len(batch)])  # type: ignore[arg-type]
        follow = steps[i + len(batch)] if i + len(batch) < len(steps) else None
        combined = follow.combined(conn) if batch and isinstance(follow, (RunCommand, Script)) else None
        failed_step = steps[i]
        try:
            if batch and _distinct_targets(batch) and (len(batch) > 1 or combined is not None):
                pairs = [b.uploads() for b in batch]
                uploads = [u for ups, _ in pairs for u in ups]
                dirs = [d for _, ds in pairs for d in ds]
                if combined is None:
                    flags, run = conn.put_files(uploads, make_dirs=dirs), None
                else:
                    try:
                        flags, run = conn.put_files_and_run(
                            uploads, make_dirs=dirs, then=combined.command, then_files=combined.files,
                            env=combined.env, timeout=combined.timeout, name=combined.name,
                            secrets=combined.secrets)
                    except CommandError as exc:
                        flags = exc.copy_flags
                        if flags is not None:  # the copies went through; the command after them failed
                            failed_step = follow  # type: ignore[assignment]
                            k = 0
                            for b, (ups, _) in zip(batch, pairs):
                                done.append(b.result(flags[k:k + len(ups)]))
                                k += len(ups)
                        raise
                results, k = [], 0
                for b, (ups, _) in zip(batch, pairs):
                    results.append((b, b.result(flags[k:k + len(ups)])))
                    k += len(ups)
                if combined is not None and run is not None:
                    results.append((follow, combined.finish(run)))  # type: ignore[arg-type]
                i += len(results)
            else:
                step = steps[i]
                results = [(step, step.apply(conn))]
                i += 1
        except ProvisionError as exc:
            raise exc.with_context(step=failed_step.name, results=done)
        for pair in results:
            done.append(pair[1])
            yield pair


def _distinct_targets(batch: Sequence["CopyStep"]) -> bool:
    paths = [u.remote_path for b in batch for u in b.uploads()[0]]
    return len(paths) == len(set(paths))


def run_steps(conn: Connection, steps: Sequence[Step]) -> list[StepResult]:
    """Apply ``steps`` in order on one connection (opened for the duration); stop at the first failure,
    raising it with the results so far in its ``results``."""
    with conn:
        return [r for _, r in apply_steps(conn, list(steps))]
