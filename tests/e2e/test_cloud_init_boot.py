"""Local hosts booted through cloud-init: the boot path every cloud backend relies on, run for real.

Debian's cloud-init (installed by scripts/setup, disabled at this machine's boot) runs inside each host's
root from a NoCloud seed holding the user data polyvm renders for the clouds (polyvm.cloudinit).
"""

from __future__ import annotations

import pytest
import yaml

from polyvm.backends.gcp import mapping as gcp
from polyvm.backends.local import engine as local_engine
from polyvm.cloudinit import render_user_data
from polyvm.errors import HostKeyError
from polyvm.provisioners import Connection
from polyvm.spec import VmSpec

pytestmark = pytest.mark.skipif(local_engine.which("cloud-init") is None,
                                reason="cloud-init is not installed (scripts/setup installs it)")


def _spec(client_key, name="ci-host", user="deploy"):
    return VmSpec.model_validate({"name": name, "size": "small", "image": {"family": "debian", "version": "12"},
                                  "ingress": [{"port": 22, "cidrs": ["198.18.0.0/15"]}],
                                  "ssh": {"user": user, "public_key": client_key.public_key}})


def _conn(h, **kw):
    return Connection(h.address, h.user, private_key_path=h.private_key_path, deadline=60, sudo=False, **kw)


def test_cloud_init_creates_the_user_installs_the_key_and_the_pinned_host_key(testhosts, client_key, tmp_path):
    spec = _spec(client_key)
    [h] = testhosts.up(1, user="deploy", boot="cloud-init",
                       user_data=lambda private, public: render_user_data(spec, private, public))
    assert h.record.boot == "cloud-init"
    log = h.record.log_path.read_text()
    assert "polyvm: cloud-init done" in log and "DataSourceNoCloud" in log, log[-2000:]
    # What cloud-init did, seen from inside:
    r = testhosts.exec(h, "cloud-init status --long; id -un deploy; cat /home/deploy/.ssh/authorized_keys; "
                          "sudo -n -u deploy sudo -n true && echo sudo-ok; ls /etc/ssh | grep ssh_host_; "
                          "cat /etc/ssh/ssh_host_ed25519_key.pub; hostname")
    out = r.stdout
    assert "status: done" in out and "\ndeploy\n" in out and client_key.public_key.split()[1] in out, out
    assert "sudo-ok" in out
    # This machine's rsa/ecdsa/ed25519 keys (visible in the overlay) were deleted; only the injected one is left.
    assert sorted(line for line in out.splitlines() if line.startswith("ssh_host_")) == \
        ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"], out
    assert h.host_key.split()[1] in out and out.strip().endswith("ci-host")
    # The seed is cloud-init's only source (no datasource probing, nothing sent to a metadata address).
    assert "seed=/var/lib/cloud/seed/nocloud" in out
    with _conn(h, host_key=h.host_key) as c:
        assert c.run("id -un").stdout == "deploy\n"
        assert c.host_key_status == "pinned"
    other = local_engine.generate_host_key("wrong")[1]
    with pytest.raises(HostKeyError, match="MISMATCH"):
        _conn(h, host_key=other).connect()


def test_gcp_guest_agent_setting_is_appended_to_an_existing_file(testhosts, client_key):
    """The GCP backend's write_files entry (append) keeps what the image already has in the file."""
    spec = _spec(client_key, name="gcp-like")
    # The image's own file, there before cloud-init's write_files runs (bootcmd runs first in cloud_init_modules).
    image_file = "[Accounts]\ndeprovision_remove = true\n"
    extra = {"write_files": [gcp.GUEST_AGENT_CONFIG],
             "bootcmd": [["sh", "-c", f"printf '{image_file}' > /etc/default/instance_configs.cfg"]]}

    def user_data(private, public):
        text = render_user_data(spec, private, public, extra=extra)
        assert yaml.safe_load(text)["write_files"] == [gcp.GUEST_AGENT_CONFIG]
        return text

    [h] = testhosts.up(1, user="deploy", boot="cloud-init", user_data=user_data)
    cfg = testhosts.exec(h, "cat /etc/default/instance_configs.cfg").stdout
    assert cfg == image_file + gcp.GUEST_AGENT_CONFIG["content"], cfg
    assert "[InstanceSetup]\nset_host_keys = false\n" in cfg
    with _conn(h, host_key=h.host_key) as c:
        assert c.run("true").exit_status == 0 and c.host_key_status == "pinned"


def test_local_backend_setting_boots_through_cloud_init(_local_engine, client_key):
    from polyvm.backends.local import LocalBackend, LocalSettings, host_of

    spec = _spec(client_key, name="via-backend", user="ops")
    settings = LocalSettings(state_dir=str(_local_engine.state_dir), boot="cloud-init")
    record = LocalBackend().create_host(spec, settings)
    try:
        assert record.boot == "cloud-init" and record.user == "ops"
        host = host_of(record, spec)
        seed = _local_engine.exec(record, "cat /var/lib/cloud/seed/nocloud/user-data").stdout
        assert seed.startswith("#cloud-config\n") and yaml.safe_load(seed)["users"][1]["name"] == "ops"
        with Connection(host.address, "ops", private_key_path=client_key.private_key_path,
                        host_key=host.host_key, deadline=60, sudo=False) as c:
            assert c.run("id -un").stdout == "ops\n" and c.host_key_status == "pinned"
    finally:
        _local_engine.down(record)


def test_bad_boot_settings_are_refused(_local_engine, client_key, monkeypatch):
    import pydantic

    from polyvm.backends.local import LocalSettings

    with pytest.raises(ValueError, match="boot must be one of direct, cloud-init"):
        _local_engine.up(authorized_keys=client_key.public_key, user="u", boot="pxe")
    with pytest.raises(ValueError, match="login user other than root"):
        _local_engine.up(authorized_keys=client_key.public_key, boot="cloud-init")
    with pytest.raises(pydantic.ValidationError):
        LocalSettings(boot="pxe")
    monkeypatch.setenv("POLYVM_LOCAL_BOOT", "cloud-init")
    assert LocalSettings().boot == "cloud-init"
