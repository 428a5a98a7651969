"""postgres-vm: one polyvm VM on the backend chosen in Pulumi config, then its guest baseline and recipe.

    pulumi stack init aws
    pulumi config set polyvm:backend aws          # or copy Pulumi.aws.yaml
    pulumi up

Config (Pulumi.<stack>.yaml): polyvm:backend, polyvm:vm (the VM spec, docs/spec.md), polyvm:<backend>
(backend settings, docs/backends.md), and optionally a recipe's inputs: polyvm:postgres (docs/postgres.md),
polyvm:nginx (docs/nginx.md) or any plugin's (polyvm:recipe names which when there are several). The guest
baseline (in-guest firewall, data disks) is declared for every VM that needs it, with or without a recipe.
"""

from polyvm.program import run
from polyvm.provisioners.pulumi import provision_vm

run(after=provision_vm)
