"""postgres-vm: one polyvm VM on the backend chosen in Pulumi config.

    pulumi stack init aws
    pulumi config set polyvm:backend aws          # or copy Pulumi.aws.yaml
    pulumi up

Config (Pulumi.<stack>.yaml): polyvm:backend, polyvm:vm (the VM spec, docs/spec.md), polyvm:<backend>
(backend settings, docs/backends.md), and optionally polyvm:postgres (the recipe's inputs, docs/postgres.md).
"""

from polyvm.program import run

try:  # the PostgreSQL recipe's Pulumi form; without it this program declares the VM only
    from polyvm.recipes.postgres.pulumi import after_vm
except ImportError:  # pragma: no cover - older installs
    after_vm = None

run(after=after_vm)
