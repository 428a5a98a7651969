"""The Pulumi form against a real host, without the Pulumi CLI: declare ``PostgresServer`` under Pulumi's
mock runtime, then hand each declared CopyFile/RemoteExec's inputs to its dynamic provider's ``create``
in order (what the engine does on ``pulumi up``), and check the server. A second declaration diffs to
no change (what a second ``pulumi up`` would see)."""

from __future__ import annotations

import pytest

pulumi = pytest.importorskip("pulumi")
psycopg = pytest.importorskip("psycopg", reason="psycopg is needed for client-side logins")

from pulumi.runtime import rpc  # noqa: E402

from polyvm.component import VirtualMachine  # noqa: E402
from polyvm.plan import run_mocked  # noqa: E402
from polyvm.provisioners.pulumi import CopyFileProvider, RemoteExecProvider  # noqa: E402
from polyvm.spec import parse_spec  # noqa: E402

pytestmark = pytest.mark.e2e


class FakeVm(VirtualMachine):
    """A VM component whose outputs are a test host's (what a backend would report)."""

    def __init__(self, spec, host):
        super().__init__("testhost", spec)
        self.finish(public_ip=host.address, private_ip=host.address, ssh_user=host.user, host_key=host.host_key,
                    data_disk_devices={"pgdata": host.disk})


def _plain(value):
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _plain(value["value"])
        return {k: _plain(v) for k, v in value.items() if k != "__provider"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def declared(host, key_text, settings):
    from polyvm.recipes.postgres.pulumi import PostgresServer

    spec = parse_spec({"name": "db1", "size": {"cpus": 2, "memory_gb": 0.5},
                       "image": {"family": "debian", "version": "12"},
                       "data_disks": [{"name": "pgdata", "size_gb": 1, "mount_point": "/var/lib/postgresql"}],
                       "ingress": [{"port": 22, "cidrs": [f"{host.record.host_ip}/32"]},
                                   {"port": 5432, "cidrs": [f"{host.record.host_ip}/32"]}],
                       "ssh": {"user": "polyvm", "public_key": host.host_key}})

    def program():
        vm = FakeVm(spec, host)
        db = PostgresServer("db1-postgres", vm=vm, settings=settings, private_key=key_text, guest_firewall=False)
        return db.passwords

    class RandomMocks:
        mock_outputs = {"random:index/randomPassword:RandomPassword":
                        lambda name, inputs: {"result": "generated-" + name}}
        mock_calls: dict = {}

    _value, mocks, _ = run_mocked(program, [RandomMocks])
    steps = []
    for typ, name, inputs, _custom, _id in mocks.resources:
        if typ.startswith("pulumi-python:dynamic/polyvm:"):
            kind = typ.rsplit(":", 1)[-1]
            steps.append((name, kind, _plain(inputs)))
    return sorted(steps, key=lambda s: s[0])  # the names carry the step order: db1-postgres-NN-...


def test_pulumi_form_brings_up_a_working_server_and_rerun_diffs_to_nothing(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=128)
    key_text = host.private_key_path.read_text()
    # log_statement=all: the password the Pulumi form sends on stdin must still not reach the server log.
    settings = {"users": [{"name": "app"}], "databases": [{"name": "app"}], "settings": {"log_statement": "all"}}
    steps = declared(host, key_text, settings)
    assert [k for _n, k, _i in steps].count("RemoteExec") >= 5
    providers = {"CopyFile": CopyFileProvider(), "RemoteExec": RemoteExecProvider()}
    state = {}
    for name, kind, inputs in steps:
        checked = providers[kind].check({}, inputs)
        assert not checked.failures, (name, checked.failures)
        state[name] = providers[kind].create(checked.inputs).outs

    with psycopg.connect(host=host.address, user="app", password="generated-db1-postgres-app-password",
                         dbname="app", sslmode="require", connect_timeout=10) as c:
        assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
    # The server's CA certificate is read back (the stack output's client_files["ca.crt"]): with it a
    # client verifies the server at verify-full, by the address it connects to.
    ca_pem = state["db1-postgres-client-ca-crt"]["stdout"]
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    ca_file = host.private_key_path.parent / "pulumi-ca.crt"
    ca_file.write_text(ca_pem + "\n")
    with psycopg.connect(host=host.address, user="app", password="generated-db1-postgres-app-password",
                         dbname="app", sslmode="verify-full", sslrootcert=str(ca_file), connect_timeout=10) as c:
        assert c.execute("select 1").fetchone() == (1,)
    shown = testhosts.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-XAtc", "SHOW data_directory"])
    assert shown.stdout.strip() == "/var/lib/postgresql/15/main"
    logs = testhosts.exec(host, "cat /var/log/postgresql/*.log").stdout
    assert "SELECT ssl FROM pg_stat_ssl" in logs  # statements are logged ...
    assert "generated-db1-postgres-app-password" not in logs  # ... but not the one carrying the password
    src = testhosts.exec(host, ["findmnt", "-n", "-o", "SOURCE", "--target", "/var/lib/postgresql/15/main"])
    assert src.stdout.strip() == host.disk

    # Declared again with the same inputs: every resource diffs to "no change", so nothing would run.
    again = declared(host, key_text, settings)
    assert [n for n, _k, _i in again] == [n for n, _k, _i in steps]
    for name, kind, inputs in again:
        news = providers[kind].check(state[name], inputs).inputs
        diff = providers[kind].diff(name, state[name], news)
        assert not diff.changes, name

    # A changed setting: the drop-in and the server step (and the verify step) would run again.
    changed = declared(host, key_text, {**settings, "settings": {"log_statement": "all", "work_mem": "12MB"}})
    rerun = [name for name, kind, inputs in changed
             if providers[kind].diff(name, state[name], providers[kind].check(state[name], inputs).inputs).changes]
    assert rerun == ["db1-postgres-04-configuration-50-polyvm-conf", "db1-postgres-05-server",
                     "db1-postgres-07-verify"]
