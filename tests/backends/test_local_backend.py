"""The local backend: pure mapping, the dynamic provider against real hosts, the wiring under Pulumi mocks."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys

import paramiko
import pytest

from polyvm.backend import spec_ingress_rules
from polyvm.backends.local import HOST_TYPE, LocalBackend, recipe_leftovers
from polyvm.backends.local import mapping as m
from polyvm.backends.local.provider import LocalHostProvider
from polyvm.errors import UnsupportedFeatureError
from polyvm.plan import plan
from polyvm.spec import parse_spec

LINK = "198.18.0.0/15"


def make_spec(public_key: str, **patch):
    family, version = m.host_os()
    data = {"name": "db1", "size": "small", "image": {"family": family, "version": version},
            "ssh": {"user": "admin", "public_key": public_key},
            "data_disks": [{"name": "pgdata", "size_gb": 1}],
            "ingress": [{"port": 22, "cidrs": [LINK]}, {"port": 5432, "cidrs": [LINK]}],
            "tags": {"team": "data"}}
    data.update(patch)
    return parse_spec(data)


# --- pure ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ('ID=debian\nVERSION_ID="12"\n', ("debian", "12")),
    ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', ("ubuntu", "24.04")),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n', ("rhel", "9")),
    ('ID=amzn\nVERSION_ID="2023"\n', ("amazon-linux", "2023")),
    ('ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="21.3"\n', ("ubuntu", "21.3")),
    ('ID=arch\n', (None, None)),
])
def test_host_os(tmp_path, text, want):
    (tmp_path / "os-release").write_text(text)
    assert m.host_os(tmp_path / "os-release") == want


def test_host_props_carry_no_secret_and_exact_firewall(client_key):
    spec = make_spec(client_key.public_key)
    props = m.host_props(spec, scrub=recipe_leftovers())
    assert props["disks"] == [{"name": "pgdata", "size_mb": 1024}]
    assert m.planned_ingress(props) == spec_ingress_rules(spec)
    assert "PRIVATE" not in repr(props)


def test_unsupported_options_and_other_os_version_are_rejected(client_key, monkeypatch):
    spec = make_spec(client_key.public_key, region="eu-1", size={"cpus": 2, "memory_gb": 4,
                                                                   "instance_type": {"local": "big"}})
    with pytest.raises(UnsupportedFeatureError) as err:
        LocalBackend().check(spec)
    assert "region" in str(err.value) and "size.instance_type.local" in str(err.value)
    # Same family, another version than this machine's: rejected, naming the option and why.
    import polyvm.backends.local as local

    monkeypatch.setattr(local, "HOST_VERSION", "0.0")
    with pytest.raises(UnsupportedFeatureError, match=r"image.version .* this machine's OS"):
        LocalBackend().check(make_spec(client_key.public_key))


# --- the provider pickles --------------------------------------------------------------------------------
def test_provider_pickles_and_loads_in_a_fresh_process(tmp_path):
    from pulumi.dynamic.dynamic import serialize_provider

    blob = serialize_provider(LocalHostProvider(str(tmp_path)))
    code = ("import base64, sys, dill; p = dill.loads(base64.b64decode(sys.stdin.read())); "
            "print(type(p).__module__, type(p).__name__, p.state_dir)")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["polyvm.backends.local.provider", "LocalHostProvider", str(tmp_path)]


def test_diff_replaces_or_updates(client_key):
    p = LocalHostProvider()
    olds = {**m.host_props(make_spec(client_key.public_key)), "guest_ip": "198.19.0.6"}
    same = p.diff("pvm-1", olds, dict(olds))
    assert not same.changes
    fw = p.diff("pvm-1", olds, {**olds, "firewall": m.firewall_ruleset(make_spec(client_key.public_key,
                                                                                   ingress=[]))})
    assert fw.changes and not fw.replaces
    renamed = p.diff("pvm-1", olds, {**olds, "hostname": "db2"})
    assert renamed.changes and renamed.replaces == ["hostname"]


# --- wiring under Pulumi mocks ------------------------------------------------------------------------
def test_plan_outputs_and_tree(client_key):
    spec = make_spec(client_key.public_key)
    p = plan(LocalBackend(), [spec])
    (comp,) = p.by_type("polyvm:local:VirtualMachine")
    (host,) = p.by_type(HOST_TYPE)
    assert host.parent == comp.urn
    outs = dict(p.outputs["db1"])
    assert outs.pop("host_key").startswith("ssh-ed25519 ")
    assert outs == {"public_ip": "198.19.0.6", "private_ip": "198.19.0.6", "ssh_user": "admin",
                    "data_disk_devices": {"pgdata": "/dev/loop0"}}
    # The provider is recorded in the resource (not a secret: it holds only a path) and unpickles.
    import dill

    provider = dill.loads(base64.b64decode(host.inputs["__provider"]))
    assert isinstance(provider, LocalHostProvider)


def test_private_vm_has_no_public_ip(client_key):
    p = plan(LocalBackend(), [make_spec(client_key.public_key, public_ip=False)])
    assert p.outputs["db1"]["public_ip"] is None and p.outputs["db1"]["private_ip"] == "198.19.0.6"


# --- the provider against real hosts -------------------------------------------------------------------
def _tcp_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.e2e
def test_provider_lifecycle_on_a_real_host(_local_engine, client_key):
    spec = make_spec(client_key.public_key)
    provider = LocalHostProvider(str(_local_engine.state_dir))
    props = m.host_props(spec, scrub=recipe_leftovers())
    created = provider.create(dict(props))
    hid, outs = created.id, created.outs
    try:
        assert outs["guest_ip"].startswith("198.19.") and outs["host_key"].startswith("ssh-ed25519 ")
        host = _local_engine.get(hid)
        assert host.labels["team"] == "data" and host.labels["managed-by"] == "polyvm"

        # Log in as the spec's user, pinning the host key from the outputs.
        client = paramiko.SSHClient()
        kt, kb = outs["host_key"].split()[:2]
        client.get_host_keys().add(outs["guest_ip"], kt, paramiko.Ed25519Key(data=base64.b64decode(kb)))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(outs["guest_ip"], username="admin", key_filename=str(client_key.private_key_path),
                       look_for_keys=False, allow_agent=False, timeout=10)
        dev = outs["disk_devices"]["pgdata"]
        _, out, _ = client.exec_command(f"hostname; sudo -n blockdev --getsize64 {dev}; "
                                        "ls /etc/postgresql/*/ 2>/dev/null | wc -l")
        assert out.read().decode().split() == ["db1", str(1 << 30), "0"]
        client.close()

        # Firewall: SSH allowed by the spec; a listener on 8080 is dropped until an update allows it.
        subprocess.Popen(_local_engine.nsenter_argv(host) + [
            "python3", "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',8080)); s.listen(); "
                             "time.sleep(120)"])
        _local_engine.exec(host, "for i in $(seq 600); do ss -ltn | grep -q ':8080 ' && exit 0; sleep 0.1; "
                                 "done; exit 1")
        assert not _tcp_open(outs["guest_ip"], 8080)
        news = dict(props, firewall=m.firewall_ruleset(make_spec(
            client_key.public_key, ingress=[{"port": 22, "cidrs": [LINK]}, {"port": 8080, "cidrs": [LINK]}])))
        assert provider.diff(hid, outs, news).replaces == []
        updated = provider.update(hid, outs, news)
        assert _tcp_open(outs["guest_ip"], 8080)
        assert updated.outs["guest_ip"] == outs["guest_ip"]

        read = provider.read(hid, updated.outs)
        assert read.id == hid and read.outs["host_key"] == outs["host_key"]
    finally:
        provider.delete(hid, outs)
    assert _local_engine.get(hid) is None
    assert provider.read(hid, outs).id == ""
    provider.delete(hid, outs)  # idempotent


# --- docs stay in step with the code ----------------------------------------------------------------------
def test_docs_local_md_names_every_sandbox_command_option_and_setting():
    from pathlib import Path

    from polyvm.backends.local import LocalSettings
    from polyvm.backends.local.cli import sandbox_group

    doc = (Path(__file__).parents[2] / "docs" / "local.md").read_text()
    missing = []
    for name, cmd in sandbox_group.commands.items():
        if f"`{name}" not in doc:
            missing.append(f"command {name}")
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in doc:
                    missing.append(f"{name} {opt}")
    missing += [f"setting {f}" for f in LocalSettings.model_fields if f"`{f}`" not in doc]
    assert not missing, f"docs/local.md does not mention: {', '.join(missing)}"
