"""CopyFile / RemoteExec providers called directly (as the Pulumi engine would) against real test hosts."""

from __future__ import annotations

import dill
import pytest

from polyvm.errors import CommandError, HostKeyError
from polyvm.provisioners.pulumi import CopyFileProvider, RemoteExecProvider

pytestmark = pytest.mark.e2e


def _conn(host, tmp_path, **kw):
    return {"host": host.address, "user": host.user, "private_key": host.private_key_path.read_text(),
            "host_key": host.host_key, "known_hosts": str(tmp_path / "kh"), **kw}


def roundtrip(provider):
    """What the engine does: the provider is pickled into state and unpickled in another process."""
    return dill.loads(dill.dumps(provider, recurse=True))


def test_copyfile_provider_lifecycle(testhosts, tmp_path):
    [h] = testhosts.up(1)
    p = roundtrip(CopyFileProvider())
    news = {"connection": _conn(h, tmp_path), "remote_path": "/etc/polyvm/app.conf", "content": "v1\n",
            "mode": 0o640.__float__(), "remove_on_delete": True}
    checked = p.check({}, news)
    assert checked.failures == []
    created = p.create(checked.inputs)
    assert created.id == f"{h.address}:/etc/polyvm/app.conf" and created.outs["size"] == 3
    assert testhosts.exec(h, "cat /etc/polyvm/app.conf; stat -c %a /etc/polyvm/app.conf").stdout == "v1\n640\n"
    olds = created.outs
    assert not p.diff(created.id, olds, p.check(olds, dict(news)).inputs).changes
    news2 = p.check(olds, dict(news, content="v2\n")).inputs
    assert p.diff(created.id, olds, news2).changes
    updated = p.update(created.id, olds, news2)
    assert testhosts.exec(h, "cat /etc/polyvm/app.conf").stdout == "v2\n"
    # triggers force a re-run even with the same content (the file was changed behind our back)
    testhosts.exec(h, "echo tampered > /etc/polyvm/app.conf")
    news3 = p.check(updated.outs, dict(news, content="v2\n", triggers=["rotate-1"])).inputs
    assert p.diff(created.id, updated.outs, news3).changes
    p.update(created.id, updated.outs, news3)
    assert testhosts.exec(h, "cat /etc/polyvm/app.conf").stdout == "v2\n"
    p.delete(created.id, updated.outs)
    assert testhosts.exec(h, "test -e /etc/polyvm/app.conf", check=False).returncode == 1


def test_remoteexec_provider_lifecycle(testhosts, tmp_path):
    [h] = testhosts.up(1)
    p = roundtrip(RemoteExecProvider())
    news = {"connection": _conn(h, tmp_path), "create": "echo created >> /tmp/log; cat; echo warn >&2",
            "update": "echo updated >> /tmp/log", "delete": "echo deleted >> /tmp/log",
            "stdin": "input-data", "environment": {"APP_TOKEN": "tok-123456"}, "triggers": [1]}
    checked = p.check({}, news)
    assert checked.failures == []
    created = p.create(checked.inputs)
    assert created.outs["stdout"] == "input-data" and created.outs["stderr"] == "warn"
    olds = created.outs
    assert not p.diff(created.id, olds, dict(news)).changes
    # only the delete command changed: state is updated, nothing re-runs
    nd = dict(news, delete="echo deleted-v2 >> /tmp/log")
    assert p.diff(created.id, olds, nd).changes
    olds = p.update(created.id, olds, nd).outs
    assert testhosts.exec(h, "cat /tmp/log").stdout == "created\n"
    # triggers change: the update command runs
    nt = dict(nd, triggers=[2])
    olds = p.update(created.id, olds, nt).outs
    assert testhosts.exec(h, "cat /tmp/log").stdout == "created\nupdated\n"
    p.delete(created.id, olds)
    assert testhosts.exec(h, "cat /tmp/log").stdout == "created\nupdated\ndeleted-v2\n"


def test_remoteexec_provider_failures_are_clear(testhosts, tmp_path):
    a, b = testhosts.up(2)
    p = RemoteExecProvider()
    with pytest.raises(CommandError, match="exit code 3") as ei:
        p.create({"connection": _conn(a, tmp_path), "create": "echo nope >&2; exit 3", "name": "migrate"})
    assert ei.value.command == "migrate" and "nope" in ei.value.stderr_tail
    with pytest.raises(HostKeyError):
        p.create({"connection": _conn(a, tmp_path, host_key=b.host_key), "create": "true"})
