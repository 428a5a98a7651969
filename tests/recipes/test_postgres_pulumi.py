"""The Pulumi form under Pulumi's mock runtime: which resources it declares, in what order, and that
secrets stay secret."""

from __future__ import annotations

import json

import pytest

pulumi = pytest.importorskip("pulumi")
pytest.importorskip("pulumi_random", reason="generated passwords need pulumi-random (polyvm[postgres])")

from pulumi.runtime import rpc  # noqa: E402

from polyvm.errors import SpecError  # noqa: E402
from polyvm.plan import run_mocked  # noqa: E402
from polyvm.plugins import get_backend  # noqa: E402
from polyvm.spec import parse_spec  # noqa: E402

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock-key\n-----END OPENSSH PRIVATE KEY-----\n"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"


def spec_data(**extra):
    data = {"name": "db1", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "24.04"},
            "data_disks": [{"name": "pgdata", "size_gb": 50, "mount_point": "/var/lib/postgresql"}],
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}, {"port": 5432, "cidrs": ["10.0.0.0/8"]}],
            "ssh": {"user": "polyvm", "public_key": PUB}}
    data.update(extra)
    return data


def _secret(v):
    return isinstance(v, dict) and v.get(rpc._special_sig_key) == rpc._special_secret_sig


def declare(backend_name, settings, spec=None, **kw):
    from polyvm.recipes.postgres.pulumi import PostgresServer

    backend = get_backend(backend_name)
    spec = spec or parse_spec(spec_data())

    def program():
        vm = backend.declare(spec, {} if backend_name != "vsphere" else VSPHERE_SETTINGS)
        db = PostgresServer("db1-postgres", vm=vm, settings=settings, private_key=KEY, **kw)
        return {"passwords": db.passwords, "host": db.host, "vm": vm}

    value, mocks, _ = run_mocked(program, [backend, RandomMocks])
    resources = [(typ, name, inputs) for typ, name, inputs, _c, _id in mocks.resources]
    return value, resources


class RandomMocks:
    """What pulumi-random would compute (PlanMocks reads ``mock_outputs`` from any object)."""

    mock_outputs = {"random:index/randomPassword:RandomPassword": lambda name, inputs: {"result": f"rnd-{name}-pw"}}
    mock_calls: dict = {}


VSPHERE_SETTINGS = {"datacenter": "dc1", "cluster": "c1", "datastore": "ds1", "network": "VM Network",
                    "template": "ubuntu-2404"}


def test_aws_vm_gets_the_recipe_steps_in_order_with_secrets_kept_secret():
    settings = {"users": [{"name": "app"}, {"name": "ops", "password": "given-password-42"}],
                "databases": [{"name": "app"}], "settings": {"work_mem": "8MB"}}
    value, resources = declare("aws", settings)
    mine = [(t, n, i) for t, n, i in resources if n.startswith("db1-postgres")]
    names = [n for _t, n, _i in mine]
    assert names[0] == "db1-postgres" and mine[0][0] == "polyvm:provisioners:Recipe"
    assert "db1-postgres-app-password" in names and "db1-postgres-ops-password" not in names
    steps = [n for t, n, _i in mine if t.startswith("pulumi-python:dynamic")]
    # The guest baseline (the data disk) first, then the recipe's own steps.
    assert steps == ["db1-postgres-00-data-disk-pgdata", "db1-postgres-01-install-postgresql",
                     "db1-postgres-02-data-directory", "db1-postgres-03-cluster",
                     "db1-postgres-04-configuration-50-polyvm-conf", "db1-postgres-04-configuration-pg-hba-conf",
                     "db1-postgres-05-server", "db1-postgres-06-roles-and-databases", "db1-postgres-07-verify",
                     # then the server's CA certificate is read back for the stack output (client_files)
                     "db1-postgres-client-ca-crt"]
    by_name = {n: i for _t, n, i in mine}
    assert by_name["db1-postgres-client-ca-crt"]["create"] == "cat /etc/polyvm/postgres/ca.crt"
    conf = by_name["db1-postgres-04-configuration-50-polyvm-conf"]
    assert conf["remote_path"] == "/etc/postgresql/16/main/conf.d/50-polyvm.conf"
    assert "work_mem = '8MB'" in conf["content"] and "shared_buffers = '1024MB'" in conf["content"]
    hba = by_name["db1-postgres-04-configuration-pg-hba-conf"]["content"]
    assert "hostssl all       all       10.0.0.0/8" in hba and "203.0.113.0/24" not in hba  # from the 5432 rule only
    disk = by_name["db1-postgres-00-data-disk-pgdata"]
    assert "nvme-Amazon_Elastic_Block_Store_vol" in disk["stdin"] and "mp=/var/lib/postgresql" in disk["stdin"]
    assert _secret(by_name["db1-postgres-01-install-postgresql"]["connection"])  # carries the private key
    roles = by_name["db1-postgres-06-roles-and-databases"]
    assert _secret(roles["stdin"]) and _secret(by_name["db1-postgres-07-verify"]["stdin"])
    assert "given-password-42" not in json.dumps([i for _t, n, i in mine if n != "db1-postgres-06-roles-and-databases"
                                                   and n != "db1-postgres-07-verify"], default=str)
    assert "given-password-42" not in roles["create"]
    assert by_name["db1-postgres-05-server"]["triggers"]  # re-run when a config file's hash changes
    assert not any("firewall" in n for n in names)  # aws has a cloud firewall
    from polyvm.plan import _resolve

    assert _resolve(value["passwords"]) == {"app": "rnd-db1-postgres-app-password-pw", "ops": "given-password-42"}
    assert "PASSWORD 'rnd-db1-postgres-app-password-pw'" in roles["stdin"]["value"]
    assert roles["stdin"]["value"].startswith("SET log_statement = 'none'")


def test_guest_firewall_backend_gets_nftables_from_the_spec_ingress():
    _, resources = declare("vsphere", {"users": [{"name": "app", "password": "given-password-42"}]})
    by_name = {n: i for _t, n, i in resources}
    rules = next(i for n, i in by_name.items() if n.startswith("db1-postgres") and n.endswith("firewall-nft"))
    assert "tcp dport 22 accept" in rules["content"] and "tcp dport 5432 accept" in rules["content"]
    assert "203.0.113.0/24" in rules["content"] and rules["mode"] == 0o600
    assert any(n.startswith("db1-postgres") and n.endswith("-guest-firewall") for n in by_name)
    # the baseline's steps come before the recipe's
    names = [n for n in by_name if n.startswith("db1-postgres-")]
    assert names.index(next(n for n in names if n.endswith("-guest-firewall"))) < names.index(
        next(n for n in names if n.endswith("-install-postgresql")))


def test_allowed_cidrs_required_when_the_spec_has_no_postgres_rule():
    spec = parse_spec(spec_data(ingress=[{"port": 22, "cidrs": ["203.0.113.0/24"]}]))
    with pytest.raises(SpecError, match="allowed_cidrs"):
        declare("aws", {"users": [{"name": "app"}]}, spec=spec)


def test_after_vm_hook_reads_pulumi_config():
    from polyvm.provisioners.pulumi import provision_vm as after_vm

    backend = get_backend("aws")
    spec = parse_spec(spec_data())

    def program():
        vm = backend.declare(spec, {})
        return after_vm(spec, vm)

    config = {"polyvm:postgres": {"users": [{"name": "app"}], "databases": [{"name": "app"}]},
              "polyvm:sshPrivateKey": KEY}
    _, mocks, _ = run_mocked(program, [backend, RandomMocks], config=config)
    names = [n for _t, n, _i, _c, _id in mocks.resources]
    assert "db1-postgres-07-verify" in names


def test_declaring_twice_gives_identical_inputs_so_an_unchanged_up_runs_nothing():
    settings = {"users": [{"name": "app"}], "databases": [{"name": "app"}]}
    _, first = declare("aws", settings)
    _, second = declare("aws", settings)
    strip = lambda rs: [(n, {k: v for k, v in i.items() if k != "__provider"}) for _t, n, i in rs  # noqa: E731
                        if n.startswith("db1-postgres-0")]
    assert strip(first) == strip(second)


def test_a_guest_firewall_vm_without_a_recipe_still_gets_the_baseline():
    from polyvm.provisioners.pulumi import provision_vm

    backend = get_backend("vsphere")
    spec = parse_spec(spec_data())

    def program():
        vm = backend.declare(spec, VSPHERE_SETTINGS)
        return provision_vm(spec, vm)

    _, mocks, _ = run_mocked(program, [backend], config={"polyvm:sshPrivateKey": KEY})
    names = [n for _t, n, _i, _c, _id in mocks.resources if n.startswith("db1-baseline")]
    # vSphere injects the host key through guestinfo: it is rotated first (provisioners.pulumi.RotateHostKey).
    assert names == ["db1-baseline", "db1-baseline-host-key", "db1-baseline-00-guest-firewall-rules-firewall-nft",
                     "db1-baseline-01-guest-firewall", "db1-baseline-02-data-disk-pgdata"]
    _, kept, _ = run_mocked(program, [backend], config={"polyvm:sshPrivateKey": KEY,
                                                        "polyvm:rotateHostKey": "false"})
    assert "db1-baseline-host-key" not in [n for _t, n, _i, _c, _id in kept.resources]

    # Without a way to log in, that is a clear error, not an unfiltered VM.
    from polyvm.errors import ConfigError

    with pytest.raises(ConfigError, match="the guest firewall needs SSH"):
        run_mocked(program, [backend], config={})
