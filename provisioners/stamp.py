"""Run stamps: an unchanged re-run of a recipe in one command (handshake + 2 round trips).

After a successful run, :class:`StampWrite` (the last step, in the same program as the steps before it) leaves
on the host, root-only (``/var/lib/polyvm/stamps``, 0700):

* ``<recipe>.state`` — a small shell script printing the live state the run's steps act on: the OS facts, the
  mode, owner and SHA-256 of every file the steps copied, the guest baseline's live state (the loaded
  nftables table, the data disk mounts) and the recipe's own probe (:meth:`polyvm.recipe.Recipe.stamp_probe`:
  for PostgreSQL the running cluster, its settings, its catalog, its TLS files and whether the certificate
  is due for renewal);
* ``<recipe>`` — the SHA-256 of that script's output (stdout and stderr) preceded by the run's digest.

The run's digest (:func:`run_digest`) is an HMAC, computed on this machine, of everything that decides the
steps besides the host's facts: the recipe, polyvm's and the recipe's code, the inputs (secrets included) and
the Host. Its key is derived from the inputs' secrets with PBKDF2 (10,000 iterations, more than SCRAM's 4096),
so the stamp is no easier an oracle for a password than the server's own verifiers (SCRAM-SHA-256 in
pg_authid: 4096 iterations).

The next run starts with :func:`check_command` (in the exec request: no secrets, no stdin): it runs the state
script with the new digest and compares. Equal: every step would find the host as it wants it, and the run
reports each step unchanged without running it. Different (other inputs, other code, a file edited, a role
dropped, the server stopped, a certificate near expiry, the OS upgraded...): the stamp is deleted before
anything changes and every step runs; the same command returned the facts the steps need, so a stamp miss costs
no round trip over a run without stamps. A run that fails leaves no stamp. ``--full-run`` (``stamp=False``)
skips the check.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import shlex
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from pydantic import BaseModel, SecretBytes, SecretStr

from polyvm.host import FACTS_COMMAND

from .exec import RunResult
from .steps import COPY_STEPS, Piece, Step, StepResult

if TYPE_CHECKING:
    from polyvm.host import Host
    from polyvm.recipe import Recipe

    from .connection import Connection

STAMP_DIR = "/var/lib/polyvm/stamps"
#: Lines the check prints first: the stamp matched, or the steps must run (the facts follow either way).
STAMP_OK = "@@polyvm-stamp:ok@@"
STAMP_RUN = "@@polyvm-stamp:run@@"
_KDF_ITERATIONS = 10_000
_VERSION = 1


# --- the client side: what decides the steps ----------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _tree_digest(root: str) -> str:
    """SHA-256 over every file under ``root`` (path, size and modification time; caches skipped): the code that
    renders steps. Any edit, checkout or upgrade changes a file's mtime, so it changes the digest (a stamp
    miss: the safe direction), for the price of a stat per file instead of reading the package."""
    h = hashlib.sha256()
    base = Path(root)
    for p in sorted(base.rglob("*")):
        if "__pycache__" in p.parts or p.suffix in (".pyc", ".pyo") or not p.is_file():
            continue
        st = p.stat()
        h.update(f"{p.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def code_digest(recipe: "Recipe | None") -> str:
    """Digest of polyvm's code and of the recipe's package (a third-party recipe lives outside polyvm)."""
    import sys

    import polyvm

    roots = {str(Path(p)) for p in polyvm.__path__}
    if recipe is not None:
        module = sys.modules.get(type(recipe).__module__)
        file = getattr(module, "__file__", None)
        if file:
            roots.add(str(Path(file).resolve().parent))
    return hashlib.sha256("".join(_tree_digest(r) for r in sorted(roots)).encode()).hexdigest()


def _plain(value: Any, secrets: list[str]) -> Any:
    """``value`` as JSON-able data with secrets revealed (collected into ``secrets`` for the key)."""
    if isinstance(value, (SecretStr, SecretBytes)):
        raw = value.get_secret_value()
        text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
        secrets.append(text)
        return {"secret": text}
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k), secrets) for k in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), secrets) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v, secrets) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v, secrets) for v in value]
        return sorted(items, key=json.dumps) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@functools.lru_cache(maxsize=256)
def _key(secrets: tuple[str, ...]) -> bytes:
    if not secrets:
        return b"polyvm run stamp: no secrets"
    return hashlib.pbkdf2_hmac("sha256", "\0".join(secrets).encode("utf-8", "surrogateescape"),
                               b"polyvm run stamp v1", _KDF_ITERATIONS)


def run_digest(recipe: "Recipe", inputs: BaseModel | None, host: "Host") -> str:
    """HMAC of everything that decides the run's steps except the host's own facts (checked on the host)."""
    secrets: list[str] = []
    host_part = {k: v for k, v in _plain(host, secrets).items() if k not in ("host_key", "labels")}
    material = json.dumps({"v": _VERSION, "recipe": recipe.name, "code": code_digest(recipe),
                           "inputs": _plain(inputs, secrets), "host": host_part},
                          sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(_key(tuple(secrets)), material.encode(), "sha256").hexdigest()


# --- the host side -----------------------------------------------------------------------------------------

def _paths(name: str) -> tuple[str, str]:
    """The stamp and state script of recipe ``name``: ASCII letters, digits, - and _ kept, anything else (a
    plugin's "my.recipe", a "/") as %xx, so every name gets its own two files inside STAMP_DIR."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"%{ord(c):02x}" for c in name)
    return f"{STAMP_DIR}/{safe}", f"{STAMP_DIR}/{safe}.state"


def check_command(name: str, digest: str) -> str:
    """The command starting a stamped run: prints STAMP_OK when the host's state with ``digest`` matches the
    stamp, else removes the stamp and prints STAMP_RUN; then the facts (:data:`polyvm.host.FACTS_COMMAND`)."""
    stamp, state = _paths(name)
    s, st, d = shlex.quote(stamp), shlex.quote(state), shlex.quote(digest)
    return (f"if [ -f {s} ] && [ -f {st} ] && [ \"$(sed -n 1p {s})\" = \"$(sh {st} {d} 2>&1 </dev/null | sha256sum "
            f"| cut -c1-64)\" ]; then echo {STAMP_OK}; else rm -f {s}; echo {STAMP_RUN}; fi; {FACTS_COMMAND}")


def parse_check(stdout: str) -> tuple[bool, str]:
    """(stamp matched, the facts command's output) from :func:`check_command`'s output."""
    head, _, rest = stdout.partition("\n")
    if head.strip() not in (STAMP_OK, STAMP_RUN):
        raise ValueError(f"unexpected stamp check output: {head[:80]!r}")
    return head.strip() == STAMP_OK, rest


def copied_paths(steps: Iterable[Step]) -> list[str]:
    """Every remote file the copy steps write (CopyFile, FilesStep, CopyDir), in order, once."""
    out: dict[str, None] = {}
    for step in steps:
        if isinstance(step, COPY_STEPS):
            for up in step.uploads()[0]:
                out.setdefault(up.remote_path, None)
    return list(out)


def state_script(files: Sequence[str], probes: Sequence[str]) -> str:
    """The script the stamp keeps: its first argument (the run's digest), the facts, each probe (stdin from
    /dev/null, stderr counted; a probe lists more files with ``f FILE``), then every file's type, mode, owner
    and SHA-256. Probes run in the script's own shell (they must not ``exit``)."""
    template = resources.files("polyvm.provisioners").joinpath("templates/stamp-state.sh").read_text()
    file_lines = "".join(f"f {shlex.quote(p)}\n" for p in files)
    probe_lines = "".join(f"{{\n{p.rstrip()}\n}} </dev/null 2>&1\n" for p in probes if p.strip())
    return (template.replace("@@FACTS@@", FACTS_COMMAND).replace("@@FILES@@\n", file_lines)
            .replace("@@PROBES@@\n", probe_lines))


class StampWrite(Step):
    """The last step of a stamped run: writes the state script and the stamp (see the module's docstring).
    Never changes the host's service; reported as not changed."""

    name = "stamp"

    def __init__(self, recipe: str, digest: str, script: str) -> None:
        self.recipe = recipe
        self.digest = digest
        self.script = script

    def _program(self) -> str:
        stamp, state = _paths(self.recipe)
        s, st = shlex.quote(stamp), shlex.quote(state)
        return (f"set -e; umask 077; mkdir -p {shlex.quote(STAMP_DIR)}; chmod 0700 {shlex.quote(STAMP_DIR)}\n"
                f"printf '%s' {shlex.quote(self.script)} > {st}.tmp; mv -f {st}.tmp {st}\n"
                f"h=$(sh {st} {shlex.quote(self.digest)} 2>&1 </dev/null | sha256sum | cut -c1-64)\n"
                f"printf '%s\\n' \"$h\" > {s}.tmp; mv -f {s}.tmp {s}")

    def _finish(self, r: RunResult) -> StepResult:
        return StepResult(self.name, False, "the host's state is stamped for the next run", r)

    def pipelined(self, conn: "Connection") -> Piece | None:
        return Piece(self._program(), self.name, self._finish)

    def apply(self, conn: "Connection") -> StepResult:
        return self._finish(conn.run(self._program(), name="write the run stamp"))


def unchanged(steps: Sequence[Step]) -> list[StepResult]:
    """The results of a run whose stamp matched: every step, unchanged, nothing sent."""
    return [StepResult(s.name, False, "unchanged: the host matches the stamp of the last successful run")
            for s in steps]
