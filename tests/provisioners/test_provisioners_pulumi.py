"""Pulumi resources: provider logic without hosts, pickling, and the resources' wiring under Pulumi mocks."""

from __future__ import annotations

import pickle

import dill
import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from polyvm.plan import run_mocked
from polyvm.provisioners.pulumi import CopyFile, CopyFileProvider, RemoteExec, RemoteExecProvider

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"
CONN = {"host": "198.51.100.7", "user": "admin", "private_key": KEY}


@pytest.mark.parametrize("provider", [CopyFileProvider(), RemoteExecProvider()])
def test_providers_pickle_cleanly(provider):
    for dumped in (pickle.dumps(provider), dill.dumps(provider, recurse=True)):
        assert type(pickle.loads(dumped)) is type(provider)
    text = serialize_provider(provider)  # exactly what Pulumi stores in state
    assert type(dill.loads(__import__("base64").b64decode(text))) is type(provider)
    assert b"PRIVATE KEY" not in dill.dumps(provider, recurse=True)


def test_copyfile_check_reports_every_problem(tmp_path):
    p = CopyFileProvider()
    r = p.check({}, {"connection": {"user": "x", "bogus": 1}, "content": "a", "source": "b", "mode": "9z"})
    props = sorted(f.property for f in r.failures)
    assert props == ["connection", "connection", "content", "mode", "remote_path"]
    f = tmp_path / "f"
    f.write_text("data")
    ok = p.check({}, {"connection": CONN, "remote_path": "/etc/x", "source": str(f), "mode": "0600"})
    assert ok.failures == [] and len(ok.inputs["sha256"]) == 64


def test_copyfile_diff():
    p = CopyFileProvider()
    base = {"connection": CONN, "remote_path": "/etc/x", "content": "a", "mode": 420}
    olds = dict(base, sha256=p.check({}, base).inputs["sha256"])
    same = p.check({}, dict(base))
    assert not p.diff("id", olds, same.inputs).changes
    assert p.diff("id", olds, p.check({}, dict(base, content="b")).inputs).changes
    d = p.diff("id", olds, p.check({}, dict(base, triggers=["v2"])).inputs)
    assert d.changes and not d.replaces
    d = p.diff("id", olds, p.check({}, dict(base, remote_path="/etc/y")).inputs)
    assert d.replaces == ["remote_path"]
    d = p.diff("id", olds, p.check({}, dict(base, connection=dict(CONN, host="198.51.100.8"))).inputs)
    assert d.replaces == ["connection"]


def test_remoteexec_check_and_diff():
    p = RemoteExecProvider()
    assert [f.property for f in p.check({}, {"connection": CONN}).failures] == ["create"]
    olds = {"connection": CONN, "create": "echo a", "stdout": "a\n", "stderr": ""}
    news = {"connection": CONN, "create": "echo a"}
    assert not p.diff("id", olds, news).changes
    assert p.diff("id", olds, dict(news, triggers={"v": 2})).changes
    assert p.diff("id", olds, dict(news, environment={"A": "1"})).changes
    assert p.diff("id", olds, dict(news, connection=dict(CONN, port=2222))).replaces == ["connection"]
    # port arrives as a float from the engine: not a change
    assert not p.diff("id", dict(olds, connection=dict(CONN, port=22.0)), dict(news, connection=dict(CONN, port=22))).changes


def _secret(value) -> bool:
    from pulumi.runtime import rpc

    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def test_resources_under_mocks_keep_keys_and_derived_outputs_secret():
    def program():
        f = CopyFile("motd", connection=CONN, remote_path="/etc/motd", content="hello\n", mode=0o644,
                     triggers=["1"])
        g = CopyFile("secret-file", connection=CONN, remote_path="/etc/pw", content=pulumi.Output.secret("pw"))
        plain = RemoteExec("plain", connection=CONN, create="uptime")
        secret = RemoteExec("init", connection=CONN, create="psql -f -", stdin=pulumi.Output.secret("ALTER ROLE"),
                            delete="echo bye", triggers=[f.sha256])
        return {"f": f, "g": g, "plain": plain, "secret": secret}

    _, mocks, _ = run_mocked(program)
    by_name = {name: (typ, inputs) for typ, name, inputs, _custom, _id in mocks.resources}
    assert by_name["motd"][0] == "pulumi-python:dynamic/polyvm:CopyFile"
    assert by_name["init"][0] == "pulumi-python:dynamic/polyvm:RemoteExec"
    motd = by_name["motd"][1]
    # Pulumi lifts a nested secret to the whole property: the connection (with its key) is secret
    assert _secret(motd["connection"]) and motd["connection"]["value"]["host"] == CONN["host"]
    assert motd["remote_path"] == "/etc/motd" and motd["triggers"] == ["1"] and not _secret(motd["sha256"])
    assert "__provider" in motd and KEY not in str(motd["__provider"])
    assert _secret(by_name["secret-file"][1]["sha256"])  # a hash of secret content is secret too
    assert not _secret(by_name["plain"][1]["stdout"])
    init = by_name["init"][1]
    assert _secret(init["stdout"]) and _secret(init["stderr"]) and _secret(init["stdin"])
    assert init["delete"] == "echo bye"
