"""polyvm exec / polyvm copy: target parsing, inventory errors, exit codes, no tracebacks."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from polyvm.cli import build_cli
from polyvm.errors import ConfigError
from polyvm.provisioners.cli import build_connections, load_inventory, parse_target


@pytest.mark.parametrize("text,expected", [
    ("h", {"host": "h"}),
    ("admin@10.0.0.1", {"user": "admin", "host": "10.0.0.1"}),
    ("admin@10.0.0.1:2222", {"user": "admin", "host": "10.0.0.1", "port": 2222}),
    ("[2001:db8::1]:22", {"host": "2001:db8::1", "port": 22}),
    ("2001:db8::1", {"host": "2001:db8::1"}),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["", "h:port", "[::1", "[::1]x", "u@"])
def test_parse_target_rejects(text):
    with pytest.raises(ConfigError):
        parse_target(text)


def test_inventory_forms(tmp_path):
    f = tmp_path / "inv.yaml"
    f.write_text("defaults: {user: admin}\nhosts:\n  - 10.0.0.1\n  - {host: 10.0.0.2, port: 2200}\n")
    defaults, hosts = load_inventory(f)
    assert defaults == {"user": "admin"} and hosts == [{"host": "10.0.0.1"}, {"host": "10.0.0.2", "port": 2200}]
    f.write_text("hosts:\n  db1: {host: 10.0.0.5}\n  web.example:\n")
    _, hosts = load_inventory(f)
    assert hosts == [{"host": "10.0.0.5", "name": "db1"}, {"host": "web.example", "name": "web.example"}]
    conns = build_connections(["root@10.0.0.9"], str(f), {"user": "ops", "bastion": "jump@10.0.0.1:2222",
                                                          "sudo": None})
    assert [c.label for c in conns] == ["ops@10.0.0.5 via jump@10.0.0.1:2222",
                                        "ops@web.example via jump@10.0.0.1:2222",
                                        "root@10.0.0.9 via jump@10.0.0.1:2222"]
    assert conns[0].name == "db1"


@pytest.mark.parametrize("content,message", [
    ("hosts: [", "not valid YAML"),
    ("- a\n", "must be a mapping with a 'hosts' key"),
    ("hosts: 3\n", "must be a list or a mapping"),
    ("hosts: []\n", "lists no hosts"),
    ("hosts:\n  - {user: x}\n", "has no 'host'"),
    ("hosts:\n  - {host: h, pasword: x}\n", "unknown connection setting"),
])
def test_inventory_errors_are_one_line_exit_2(tmp_path, content, message):
    f = tmp_path / "inv.yaml"
    f.write_text(content)
    r = CliRunner().invoke(build_cli(), ["exec", "-i", str(f), "true"])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_no_hosts_and_bad_mode():
    r = CliRunner().invoke(build_cli(), ["exec", "true"])
    assert r.exit_code == 2 and "no hosts" in r.output
    r = CliRunner().invoke(build_cli(), ["copy", "-H", "h", "--mode", "rw", __file__, "/tmp/x"])
    assert r.exit_code == 2 and "--mode must be octal" in r.output


def test_unreachable_host_fails_with_reason_and_nonzero_exit(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = tmp_path / "id"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = CliRunner().invoke(build_cli(), ["exec", "-q", "-H", f"127.0.0.1:{port}", "-k", str(key),
                                         "--known-hosts", str(tmp_path / "kh"), "--deadline", "1", "true"])
    assert r.exit_code == 1
    assert "1 host(s) failed" in r.output and "connection refused" in r.output and "Traceback" not in r.output


def test_commands_are_documented():
    """Every option of the commands this plugin adds appears in docs/provisioners.md."""
    from pathlib import Path

    from polyvm.provisioners.cli import copy_cmd, exec_cmd

    doc = (Path(__file__).parents[2] / "docs" / "provisioners.md").read_text()
    for cmd in (exec_cmd, copy_cmd):
        assert f"polyvm {cmd.name}" in doc
        for p in cmd.params:
            for opt in p.opts:
                if opt.startswith("--"):
                    assert opt in doc, f"{cmd.name} {opt} is not documented in docs/provisioners.md"


def _stack_file(tmp_path, **recipes):
    import yaml

    spec = {"name": "db1", "size": "small", "image": {"family": "debian", "version": "12"},
            "ssh": {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtIO7vB6t0eYbT7I8u0Xu9nPp1Wm7oR1GmDq8Xc9l1Z t"},
            "ingress": [{"port": 22, "cidrs": ["198.19.0.0/16"]}]}
    config = {"polyvm:backend": "local", "polyvm:vm": spec, **{f"polyvm:{k}": v for k, v in recipes.items()}}
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return str(path)


def test_verify_takes_the_recipe_and_its_inputs_from_a_stack_file(tmp_path):
    from polyvm.provisioners.cli import stack_recipe

    assert stack_recipe(_stack_file(tmp_path, postgres={"users": [{"name": "app"}]})) == (
        "postgres", {"users": [{"name": "app"}]})
    # nginx is found from the stack alone (no --recipe), and then refused for what it is: no drift check.
    res = CliRunner().invoke(build_cli(), ["verify", "-H", "127.0.0.1:9", "--deadline", "2",
                                           "--spec", _stack_file(tmp_path, nginx={})])
    assert res.exit_code == 2 and "recipe 'nginx' has no drift check" in res.output, res.output
    both = CliRunner().invoke(build_cli(), ["verify", "-H", "127.0.0.1:9", "--spec",
                                            _stack_file(tmp_path, nginx={}, postgres={})])
    assert both.exit_code == 2 and "several recipes (nginx, postgres): choose one with --recipe" in both.output
    none = CliRunner().invoke(build_cli(), ["verify", "-H", "127.0.0.1:9", "--spec", _stack_file(tmp_path)])
    assert none.exit_code == 2 and "configures no recipe" in none.output
    plain = CliRunner().invoke(build_cli(), ["verify", "-H", "127.0.0.1:9"])
    assert plain.exit_code == 2 and "needs --recipe NAME" in plain.output
