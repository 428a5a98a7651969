"""The Pulumi form of the PostgreSQL recipe: the generic ``RecipeResource`` with the ``postgres`` recipe.

    from polyvm.recipes.postgres.pulumi import PostgresServer

    db = PostgresServer("db", vm=vm, settings={"allowed_cidrs": ["10.0.0.0/16"],
                                               "users": [{"name": "app"}], "databases": [{"name": "app"}]},
                        private_key=cfg.require_secret("sshPrivateKey"))
    pulumi.export("db_passwords", db.passwords)   # secret

The OS family, version and RAM come from the VM's spec; the guest baseline (firewall on backends with
``capabilities.firewall == "guest"``, data disks with a mount point) comes first, as for every recipe. Users
without a password get a ``pulumi_random.RandomPassword`` (secret). Each resource runs only when its own
inputs change, so a second ``pulumi up`` runs nothing; a changed setting re-copies the drop-in and re-runs
the steps after it (the server step reloads or restarts as needed).
"""

from __future__ import annotations

from typing import Any, Mapping

import pulumi

from polyvm.provisioners.pulumi import RecipeResource
from polyvm.spec import VmSpec

from .inputs import PostgresInputs


class PostgresServer(RecipeResource):
    """PostgreSQL on one VM: a ``polyvm:provisioners:Recipe`` with the ``postgres`` recipe.

    :param settings: the recipe's inputs (a mapping of :class:`PostgresInputs` fields, e.g. Pulumi config
        ``polyvm:postgres``, or a PostgresInputs). ``passwords``: user name -> password (str or Output) for
        users whose password should not be generated. The other parameters are RecipeResource's.
    """

    passwords: pulumi.Output[Mapping[str, str]]
    port: int

    def __init__(self, name: str, *, vm: Any, settings: Mapping[str, Any] | PostgresInputs,
                 private_key: Any = None, private_key_path: str | None = None, spec: VmSpec | None = None,
                 passwords: Mapping[str, Any] | None = None, guest_firewall: bool | None = None,
                 connection: Mapping[str, Any] | None = None, opts: pulumi.ResourceOptions | None = None) -> None:
        from .recipe import PostgresRecipe

        super().__init__(name, vm=vm, recipe=PostgresRecipe(), inputs=settings, private_key=private_key,
                         private_key_path=private_key_path, secrets=passwords, connection=connection, spec=spec,
                         guest_firewall=guest_firewall, opts=opts)
        assert isinstance(self.inputs, PostgresInputs)
        given = {u.name: u.password.get_secret_value() for u in self.inputs.users if u.password is not None}
        self.passwords = pulumi.Output.secret(self.secrets.apply(lambda generated: {**given, **generated}))
        self.port = self.inputs.port
        self.address = self.host.apply(lambda h: h.address)
