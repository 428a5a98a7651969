"""The one error hierarchy of polyvm.

Every error a user can cause or fix derives from :class:`PolyvmError`; the CLI prints its message on one
line and exits non-zero (``exit_code``) without a traceback. Messages never contain secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from typing_extensions import Self


class PolyvmError(Exception):
    """Base of every polyvm error. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class SpecError(PolyvmError):
    """A VmSpec (or backend settings) is invalid. Carries every problem found, each with its field path."""

    exit_code = 2

    def __init__(self, problems: Iterable[str], *, source: str | None = None, what: str = "VM spec") -> None:
        self.problems = list(problems)
        self.source = source
        self.what = what  # what is invalid: "VM spec", "postgres recipe inputs", ...
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"invalid {what}{where} ({count} problem{'s' if count != 1 else ''}):\n{lines}")


class ConfigError(PolyvmError):
    """Pulumi config or a CLI input file is missing, unreadable or of the wrong shape."""

    exit_code = 2


class LockTimeoutError(PolyvmError):
    """Another run held a lock (a state file, a sandbox VM being made) longer than the bounded wait."""

    def __init__(self, *, what: str, path: str, holder: str, waited: float) -> None:
        self.what = what
        self.path = path
        self.holder = holder
        self.waited = waited
        super().__init__(f"{what} is busy: another polyvm run ({holder}) holds {path}; gave up after "
                         f"{waited:g}s (let it finish, or stop it, and try again)")


class PluginError(PolyvmError):
    """A plugin is broken or registered something invalid."""


class UnknownBackendError(PluginError):
    """No backend of that name is registered."""

    exit_code = 2

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = sorted(available)
        super().__init__(
            f"unknown backend {name!r}; available backends: {', '.join(self.available) or '(none)'}"
        )


class UnknownRecipeError(PluginError):
    """No recipe of that name is registered."""

    exit_code = 2

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown recipe {name!r}; available recipes: {', '.join(self.available) or '(none)'}")


class MissingDependencyError(PolyvmError):
    """A backend's cloud SDK (or another optional package) is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(f"{what} needs the Python package {module!r}: pip install 'polyvm[{extra}]'")


class UnsupportedFeatureError(SpecError):
    """A backend cannot honour something the spec asks for. Never silently dropped."""

    def __init__(self, backend: str, problems: Iterable[str]) -> None:
        self.backend = backend
        super().__init__([f"backend {backend!r} cannot honour {p}" for p in problems])


class ProvisionError(PolyvmError):
    """Something failed while reaching or changing a VM over SSH.

    ``host``: the host it happened on (when known); ``step``: the name of the step that failed and
    ``results``: the step results completed before it, when raised while running steps.
    """

    def __init__(self, message: str = "", *, host: str = "", step: str | None = None,
                 results: Sequence[Any] = ()) -> None:
        self.host = host
        self.step = step
        self.results: list[Any] = list(results)
        super().__init__(message)

    def with_context(self, *, step: str | None = None, results: Sequence[Any] | None = None) -> Self:
        """This error with the failed step's name and the results before it filled in; returns itself."""
        if step is not None:
            self.step = step
        if results is not None:
            self.results = list(results)
        return self


class HostKeyError(ProvisionError):
    """The host key presented by a server is unknown when it must be known, or differs from the pinned one."""


class AuthenticationError(ProvisionError):
    """The server refused our credentials. Never retried."""


class ConnectTimeoutError(ProvisionError):
    """A host could not be reached before the deadline."""


class CommandError(ProvisionError):
    """A remote command exited non-zero, timed out or lost its connection.

    ``exit_status`` is None when there was none (timeout, lost connection); ``copy_flags``: for a command run
    right after a copy in the same channel, the per-file "changed" flags of that copy (which did go through).
    """

    #: With ``put_files_and_run``: which copies went through before the command failed (None: not known).
    copy_flags: list[bool] | None = None

    def __init__(self, message: str, *, host: str = "", command: str = "", exit_code: int | None = None,
                 stderr_tail: str = "", copy_flags: Sequence[bool] | None = None, step: str | None = None,
                 results: Sequence[Any] = ()) -> None:
        self.command = command
        self.exit_status = exit_code
        self.stderr_tail = stderr_tail
        self.copy_flags: list[bool] | None = None if copy_flags is None else list(copy_flags)
        super().__init__(message, host=host, step=step, results=results)


class FanoutError(ProvisionError):
    """Steps failed on one or more hosts of a fan-out run. ``result``: the whole run's result, when known."""

    def __init__(self, failed: dict[str, BaseException], result: Any = None) -> None:
        self.failed = failed
        self.result = result
        # Provisioning errors usually name their host already; do not say it twice.
        detail = "; ".join(str(e) if h in str(e) else f"{h}: {e}" for h, e in failed.items())
        super().__init__(f"{len(failed)} host(s) failed: {', '.join(failed)} ({detail})")


class RecipeError(PolyvmError):
    """A recipe could not bring a host to the desired state."""


class SandboxError(PolyvmError):
    """The local backend or `polyvm sandbox` cannot proceed (missing root, sshd, ...)."""
