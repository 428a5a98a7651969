"""The recipe contract: what turns a VM into a server (PostgreSQL, nginx, a plugin's own).

A recipe is registered through the ``polyvm_register_recipes`` hook (docs/plugins.md) and says:

* ``inputs_model``: a pydantic model of what it is asked for (validated before any host is touched);
* :meth:`Recipe.steps`: the provisioner steps that bring one :class:`~polyvm.host.Host` (whose OS facts are
  known) to that state, idempotently. Steps are the SSH layer's (CopyFile, FilesStep, RunCommand, Script, ...):
  the same list runs over SSH (batched, ``polyvm.provisioners.fanout.run_recipe``) and becomes Pulumi resources
  (``polyvm.provisioners.pulumi.RecipeResource``); nothing ever looks a step up by its name;
* :meth:`Recipe.outputs`: what a user needs afterwards (URL, port, ...), never secrets in clear.

The guest firewall and data disks are not a recipe's business: the guest baseline applies them to every VM
that needs them before any recipe runs. A recipe that needs secrets (generated passwords) names them in
:meth:`Recipe.secrets_needed`; the CLI keeps them in a 0600 file, Pulumi generates them as secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, SpecError

if TYPE_CHECKING:
    from polyvm.provisioners.steps import Step

    from .host import Facts, Host


@dataclass(frozen=True)
class Drift:
    """One difference between a live server and what its recipe would make it: ``kind`` (setting, pg_hba, role,
    database, extension, grant, file, firewall, tls, server, ...), ``what`` (one line a person reads) and,
    where a file differs, ``diff`` (unified, live -> recipe)."""

    kind: str
    what: str
    diff: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "what": self.what, **({"diff": self.diff} if self.diff else {})}


class Recipe:
    """Base class of every recipe. Subclasses set ``name``, ``description``, ``inputs_model`` and implement
    :meth:`steps`; the other methods have sensible defaults."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs_model: ClassVar[type[BaseModel]]
    #: Globs relative to / that a machine with the recipe's packages installed may hold but a new VM would not
    #: (generated state); the local backend removes them in its hosts, which are copies of this machine.
    leftovers: ClassVar[tuple[str, ...]] = ()
    #: Where the recipe's inputs are documented (input errors point there).
    docs: ClassVar[str] = "docs/recipes.md"

    # --- inputs ----------------------------------------------------------------------------------------
    def parse_inputs(self, data: Mapping[str, Any] | BaseModel | None, *, source: str | None = None) -> BaseModel:
        """``data`` validated into ``inputs_model``; SpecError listing every problem (with field paths)."""
        from .spec import format_validation_error

        if isinstance(data, self.inputs_model):
            return data
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{self.name} inputs{' in ' + source if source else ''}: expected a mapping")
        try:
            return self.inputs_model.model_validate(dict(data))
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, prefix=self.name, docs=self.docs), source=source,
                            what=f"{self.name} recipe inputs") from None

    def defaults_for(self, host: "Host", data: Mapping[str, Any]) -> dict[str, Any]:
        """Input defaults that depend on the host (e.g. allowed clients from its firewall rules), applied
        under the user's ``data`` before validation. Default: none."""
        return dict(data)

    def sandbox_inputs(self, host: "Host", client: str) -> dict[str, Any]:
        """Inputs for trying the recipe on a fresh host used from the address ``client`` (``polyvm sandbox
        up``); the user's overrides go on top. Default: none."""
        return {}

    # --- secrets ---------------------------------------------------------------------------------------
    def secrets_needed(self, inputs: BaseModel) -> list[str]:
        """Names of secrets the inputs lack and that must be generated (e.g. user passwords). Default: none."""
        return []

    def with_secrets(self, inputs: BaseModel, secrets: Mapping[str, str]) -> BaseModel:
        """``inputs`` with the named secrets filled in. Must be overridden when :meth:`secrets_needed` is."""
        if secrets:
            raise NotImplementedError(f"recipe {self.name!r} needs secrets but does not take them")
        return inputs

    def ensure_secrets(self, inputs: BaseModel, path: str | Path) -> tuple[BaseModel, list[str]]:
        """Fill missing secrets from (or generate them into) the 0600 file ``path``; returns the inputs and
        the names generated now. Must be overridden when :meth:`secrets_needed` can name any."""
        if self.secrets_needed(inputs):
            raise NotImplementedError(f"recipe {self.name!r} needs secrets but cannot keep them")
        return inputs, []

    # --- steps and outputs -----------------------------------------------------------------------------
    def steps(self, inputs: BaseModel, host: "Host", facts: "Facts") -> "Sequence[Step]":
        """The steps that bring ``host`` (OS and RAM in ``facts``) to the state ``inputs`` describe."""
        raise NotImplementedError

    def outputs(self, inputs: BaseModel, host: "Host") -> dict[str, Any]:
        """What a user needs to use the server (no secrets). Default: the host's address."""
        return {"address": host.address}

    def client_files(self, inputs: BaseModel, host: "Host") -> dict[str, str]:
        """Public files on the host a client needs to connect securely (file name -> path on the host),
        e.g. the CA certificate that signs the server's. The sandbox copies them next to its state and
        hands their local paths to :meth:`localize`. Default: none."""
        return {}

    def localize(self, outputs: Mapping[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
        """``outputs`` once :meth:`client_files` are on this machine (file name -> local path): e.g. a DSN
        naming the local CA file. Default: the outputs plus ``files``."""
        return {**outputs, **({"files": dict(files)} if files else {})}

    def ports(self, inputs: BaseModel) -> list[int]:
        """TCP ports the service listens on (the sandbox checks its spec opens them)."""
        return []

    def check(self, inputs: BaseModel, host: "Host", *, timeout: float = 10.0) -> str:
        """Use the service from this machine once (a login, a request); return what was checked or raise
        a PolyvmError. Default: nothing to check."""
        return ""

    def drift(self, inputs: BaseModel, host: "Host", conn: Any, *, tls_days: int = 30) -> "list[Drift] | None":
        """Compare the live host behind ``conn`` (a Connection) with what :meth:`steps` would make it, changing
        nothing; one :class:`Drift` per difference ([] when none). Default: None, the recipe has no drift
        check (``polyvm verify`` says so, exit 2)."""
        return None

    def stamp_probe(self, inputs: BaseModel, host: "Host", facts: "Facts") -> str | None:
        """POSIX sh (run as root, no secrets: it is kept on the host) whose output shows every live state
        :meth:`steps` act on besides the files they copy (those are checked anyway): a service running or
        enabled, what a database holds, a certificate due for renewal. With it, ``run_recipe`` stamps a
        successful run and skips an unchanged re-run in one command (``polyvm.provisioners.stamp``); whatever
        the probe misses, a re-run would not repair. Default: None, every run applies every step."""
        return None

    def __repr__(self) -> str:
        return f"<recipe {self.name}>"
