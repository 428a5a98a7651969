"""Steps: small objects that each change one thing on a host over a :class:`Connection` and say whether they did.

A recipe is a list of steps; :func:`run_steps` applies them in order on one connection, :func:`fanout`
(in fanout.py) on many hosts at once. :func:`apply_steps` pipelines consecutive steps that need no answer
from the client in between (scripts, commands, small copies) into one remote program on one exec channel.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping, Sequence

from polyvm.errors import CommandError, ConfigError, ProvisionError

from .connection import Connection
from .exec import RunResult, can_inline, encode_env, mask, raise_for_status, wrap_command
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


@dataclass
class Piece:
    """A step as one part of a pipelined remote program (see apply_steps): ``program`` is POSIX sh run in
    a subshell with stdin from /dev/null, its exit status the step's; ``finish`` turns the part's own
    output into the StepResult. ``private``: the program holds data that must never be in a remote argv
    (environment values, file contents), so the whole program travels on stdin. ``continues``: the step
    has more to do once the client has read this part's output (e.g. read a catalog, then change what
    differs): the program ends after this part, ``finish``'s result is not reported, and the step is asked
    for its pipelined form again, which may then join the next program."""

    program: str
    name: str
    finish: Callable[[RunResult], StepResult]
    secrets: list[str] = field(default_factory=list)
    private: bool = False
    timeout: float | None = None
    sent: tuple[int, int, int] = (0, 0, 0)  # copies: bytes sent, files changed, files unchanged (set by finish)
    continues: bool = False


#: Largest total of file content a copy step embeds in a pipelined program (above it the step runs alone,
#: where unchanged files are not sent at all).
PIPELINE_COPY_LIMIT = 64 * 1024


def _printf_to(path_expr: str, text: str) -> str:
    """Shell that writes ``text`` exactly into a new private file through the printf builtin (no argv)."""
    return f"(umask 077; set -C; printf '%s' {shlex.quote(text)} > {path_expr}) || exit 1"


def _own_apply(step: "Step") -> bool:
    """A subclass with its own ``apply`` may talk with the client between commands: never pipelined
    through its parent's form."""
    for cls in type(step).__mro__:
        if "pipelined" in cls.__dict__:
            return False  # the class that defines the pipelined form comes first: its apply is the one
        if "apply" in cls.__dict__:
            return True
    return False


def _text(data: bytes) -> str | None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


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

    def pipelined(self, conn: Connection) -> Piece | None:
        """This step as a part of one remote program with its neighbours (see apply_steps), or None when
        it needs its own channel (it reads stdin, talks with the client, or is too large)."""
        return None

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

    def pipelined(self, conn: Connection) -> Piece | None:
        """The files embedded in the program (small text files only): each is written next to its target
        under a temporary name, compared there (content, mode, owner) and moved into place only when it
        differs; the part prints one 0/1 line per file."""
        if _own_apply(self):
            return None
        uploads, dirs = self.uploads()
        datas = [u.data() for u in uploads]
        texts = [_text(d) for d in datas]
        if not uploads or sum(map(len, datas)) > PIPELINE_COPY_LIMIT or any(t is None for t in texts):
            return None
        for u in uploads:
            if not u.remote_path or "\n" in u.remote_path or u.remote_path.endswith("/"):
                return None  # the one-step path reports it
        parents = [str(PurePosixPath(u.remote_path).parent) for u in uploads]
        lines = ["(umask 022; mkdir -p -- " + " ".join(shlex.quote(d) for d in dict.fromkeys([*dirs, *parents]))
                 + ") || exit 1"]
        for u, text in zip(uploads, texts):
            p = PurePosixPath(u.remote_path)
            q, tmp = shlex.quote(u.remote_path), shlex.quote(str(p.parent / f".{p.name}.polyvm-{_secrets.token_hex(4)}"))
            who = (u.owner or "") + (f":{u.group}" if u.group else "")
            fmt = "%a" + (" %u" if u.owner else "") + (" %g" if u.group else "")
            lines += [f"trap 'rm -f -- {tmp}' EXIT", _printf_to(tmp, text or ""),
                      f"chmod {u.mode & 0o7777:o} -- {tmp} || exit 1"]
            if who:
                lines.append(f"chown -- {shlex.quote(who)} {tmp} || exit 1")
            lines.append(f"if [ -f {q} ] && cmp -s -- {tmp} {q} && "
                         f"[ \"$(stat -c '{fmt}' -- {tmp})\" = \"$(stat -L -c '{fmt}' -- {q})\" ]; "
                         f"then rm -f -- {tmp}; echo 0; else mv -f -- {tmp} {q} || exit 1; echo 1; fi")
        piece = Piece("\n".join(lines + ["trap - EXIT"]), self.name, lambda r: r, private=True)  # finish below

        def finish(r: RunResult) -> StepResult:
            flags = [ln.strip() == "1" for ln in r.stdout.splitlines() if ln.strip() in ("0", "1")]
            if len(flags) != len(uploads):
                raise ProvisionError(f"{conn.label}: {self.name}: unexpected reply from the host")
            piece.sent = (sum(map(len, datas)), sum(flags), flags.count(False))
            return self.result(flags)

        piece.finish = finish
        return piece

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
    """One file of a :class:`FilesStep`. ``public=True`` says the content holds nothing secret, so a pipelined
    program carrying it may travel in the exec request (a remote argv, readable by every user of the host
    while it runs); by default file contents are private and travel on stdin."""

    remote_path: str
    content: str | bytes
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None
    public: bool = False


class FilesStep(_Copies):
    """Several files copied atomically in one round trip as one step; unchanged files are not sent (content,
    mode and owner compared). Batched with neighbouring copies by apply_steps like CopyFile."""

    def __init__(self, name: str, files: Sequence[RemoteFile]) -> None:
        self.name = name
        self.files = list(files)

    def uploads(self) -> tuple[list[Upload], list[str]]:
        return [Upload(f.content, f.remote_path, f.mode, f.owner, f.group) for f in self.files], []

    def pipelined(self, conn: Connection) -> Piece | None:
        piece = super().pipelined(conn)
        if piece is not None and all(f.public for f in self.files):
            piece.private = False
        return piece

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

    def pipelined(self, conn: Connection) -> Piece | None:
        if self.stdin is not None or (self.sudo is not None and self.sudo != conn.sudo) or _own_apply(self):
            return None
        command, marker = self._command()
        env = (encode_env(self.env) + "\n") if self.env else ""
        return Piece(env + command, self.name, lambda r: self._finish(r, marker), self.secrets,
                     private=bool(self.env or self.secrets), timeout=self.timeout)

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

    def inline_command(self) -> str | None:
        """The remote command with the script inside it (written to a private temporary file by the shell's
        printf builtin, run from there with stdin from /dev/null), so the script needs no stdin and the
        command one round trip less; None when the step has stdin, env or secrets (those stay on stdin) or
        the script is not text."""
        text = _text(self.content)
        if self.stdin is not None or self.env or self.secrets or text is None:
            return None
        args = " ".join(shlex.quote(a) for a in self.args)
        tmp = f'"${{TMPDIR:-/tmp}}/.polyvm-script-{_secrets.token_hex(8)}"'
        return (f"__polyvm_t={tmp}; trap 'rm -f -- \"$__polyvm_t\"' EXIT; " + _printf_to('"$__polyvm_t"', text)
                + f'; {self.interpreter} "$__polyvm_t" {args}'.rstrip() + " </dev/null")

    def pipelined(self, conn: Connection) -> Piece | None:
        if (self.sudo is not None and self.sudo != conn.sudo) or _own_apply(self):
            return None
        text = _text(self.content)
        stdin = self.stdin.encode() if isinstance(self.stdin, str) else self.stdin
        stdin_text = _text(stdin) if stdin is not None else ""
        if text is None or stdin_text is None:
            return None
        args = " ".join(shlex.quote(a) for a in self.args)
        env = (encode_env(self.env) + "\n") if self.env else ""
        tmp = f'"${{TMPDIR:-/tmp}}/.polyvm-script-{_secrets.token_hex(8)}"'
        # The step's stdin (it may hold secrets: the program then goes on stdin) in a private file of its own.
        files, write, redirect = '"$__polyvm_t"', "", ""
        if stdin is not None:
            files += ' "$__polyvm_t.in"'
            write, redirect = "\n" + _printf_to('"$__polyvm_t.in"', stdin_text), ' <"$__polyvm_t.in"'
        program = (f"{env}__polyvm_t={tmp}; trap 'rm -f -- {files}' EXIT\n" + _printf_to('"$__polyvm_t"', text)
                   + write + f'\n{self.interpreter} "$__polyvm_t" {args}'.rstrip() + redirect)
        return Piece(program, self.name, self._finish, self.secrets,
                     private=bool(self.env or self.secrets or stdin is not None), timeout=self.timeout)

    def apply(self, conn: Connection) -> StepResult:
        inline = self.inline_command()
        use_sudo = conn.sudo if self.sudo is None else self.sudo
        if inline is not None and can_inline(conn, wrap_command(inline, sudo=use_sudo, env=None), ()):
            r = conn.run(inline, timeout=self.timeout, sudo=self.sudo, name=self.name)
            return self._finish(r)
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

    Consecutive steps that need no answer from the client in between (whose ``pipelined(conn)`` gives a
    Piece: scripts and commands without stdin, small text copies) run as one remote program on one
    channel, which reports each step's output and status and stops at the first failure; the program
    travels in the exec request when nothing in it is private (2 round trips for all of them), else on
    stdin (3). Consecutive copy steps followed by at most one command use the copy protocol instead (one
    tar stream of the changed files only, the command in the same channel). A failure raises the
    ProvisionError with its declared ``step`` (the failed step's name) and ``results`` (what completed
    before) set.
    """
    done: list[StepResult] = []
    i = 0
    while i < len(steps):
        chain = _pipeline(conn, steps, i)
        if chain:
            pairs, failure = _run_pipeline(conn, chain)
            for pair in pairs:
                done.append(pair[1])
                yield pair
            if failure is not None:
                raise failure.with_context(results=done)
            i += len(chain) - (1 if chain[-1][1].continues else 0)  # a step that continues is asked again
            continue
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


def _pipeline(conn: Connection, steps: Sequence[Step], i: int) -> list[tuple[Step, Piece]]:
    """The run of steps from ``i`` that can share one remote program (empty when pipelining gains nothing:
    fewer than two steps, or copies followed by at most one command, which the copy protocol does as cheaply)."""
    chain: list[tuple[Step, Piece]] = []
    while i + len(chain) < len(steps):
        piece = steps[i + len(chain)].pipelined(conn)
        if piece is None:
            break
        chain.append((steps[i + len(chain)], piece))
        if piece.continues:  # what follows needs the client to read this part's output first
            break
    if len(chain) < 2:
        return []
    if isinstance(chain[0][0], COPY_STEPS) and sum(not isinstance(st, COPY_STEPS) for st, _ in chain) <= 1:
        return []
    return chain


def pipeline_program(pieces: Sequence[Piece], marker: str) -> str:
    """One POSIX sh program running ``pieces`` in order, each in a subshell with stdin from /dev/null; after
    each, a marker line with its index and exit status on stdout (and with its index on stderr); it stops
    at the first non-zero status."""
    parts = []
    for k, piece in enumerate(pieces):
        parts.append(f"(\n{piece.program}\n) </dev/null; __polyvm_rc=$?; "
                     f"printf '\\n{marker}:{k}:%d\\n' \"$__polyvm_rc\"; printf '\\n{marker}:{k}\\n' >&2; "
                     '[ "$__polyvm_rc" -eq 0 ] || exit "$__polyvm_rc"')
    return "\n".join(parts) + "\n"


def _run_pipeline(conn: Connection, chain: Sequence[tuple[Step, Piece]]
                  ) -> tuple[list[tuple[Step, StepResult]], ProvisionError | None]:
    """Run ``chain`` as one program: the results of the steps that succeeded, and the failure (with its
    ``step`` set) that stopped it, if any."""
    pieces = [p for _, p in chain]
    marker = f"__polyvm_step_{_secrets.token_hex(6)}__"
    program = pipeline_program(pieces, marker)
    secrets = [x for p in pieces for x in p.secrets]
    timeouts = [p.timeout for p in pieces]
    timeout = None if any(t is None for t in timeouts) else sum(timeouts)  # type: ignore[arg-type]
    name = f"{pieces[0].name} … {pieces[-1].name} ({len(pieces)} steps)"
    private = any(p.private for p in pieces)
    start = time.monotonic()
    try:
        if not private and can_inline(conn, wrap_command(program, sudo=conn.sudo, env=None), secrets):
            r = conn.run(program, timeout=timeout, check=False, name=name, secrets=secrets)
        else:
            r = conn.run("sh -s", stdin=program, timeout=timeout, check=False, name=name, secrets=secrets)
    except ProvisionError as exc:
        return [], exc.with_context(step=pieces[0].name)
    outs = re.split(f"\n{marker}:(\\d+):(-?\\d+)\n", r.stdout)
    errs = re.split(f"\n{marker}:\\d+\n", r.stderr)
    statuses = [int(x) for x in outs[2::3]]
    duration = time.monotonic() - start
    results: list[tuple[Step, StepResult]] = []
    reported = 0
    for k, ((step, piece), status) in enumerate(zip(chain, statuses)):
        res = RunResult(status, outs[3 * k], errs[k] if k < len(errs) else "", duration)
        try:
            if status != 0:
                raise_for_status(conn, res, piece.name)
            result = piece.finish(res)
            if not piece.continues:
                results.append((step, result))
            reported += 1
        except ProvisionError as exc:
            return results, exc.with_context(step=piece.name)
        sent, changed, same = piece.sent
        conn.stats.bytes_uploaded += sent
        conn.stats.files_uploaded += changed
        conn.stats.files_skipped += same
    if reported < len(chain):  # the program ended without a report for this step
        piece = pieces[reported]
        k = reported
        res = RunResult(r.exit_status or 1, outs[-1], errs[k] if k < len(errs) else "", duration)
        try:
            raise_for_status(conn, res, piece.name)
            raise ProvisionError(f"{conn.label}: {piece.name!r} ended without reporting its status")
        except ProvisionError as exc:
            return results, exc.with_context(step=piece.name)
    return results, None


def _distinct_targets(batch: Sequence["CopyStep"]) -> bool:
    paths = [u.remote_path for b in batch for u in b.uploads()[0]]
    return len(paths) == len(set(paths))


def run_steps(conn: Connection, steps: Sequence[Step]) -> list[StepResult]:
    """Apply ``steps`` in order on one connection (opened for the duration); stop at the first failure,
    raising it with the results so far in its ``results``."""
    with conn:
        return [r for _, r in apply_steps(conn, list(steps))]
