"""Cloud-init user data shared by every cloud backend (pure), and the generated host key (Pulumi).

The host key is generated per VM as a pulumi-tls PrivateKey (stable across runs, secret in state) and
written by cloud-init's ``ssh_keys`` module, so the VM's host key is known before it boots and SSH is
pinned from the first connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from .errors import MissingDependencyError
from .spec import VmSpec

if TYPE_CHECKING:
    import pulumi


def render_user_data(spec: VmSpec, host_private_key: str | None, host_public_key: str | None,
                     *, extra: dict[str, Any] | None = None) -> str:
    """The ``#cloud-config`` document: login user with the spec's key, no passwords, the given host key."""
    cfg: dict[str, Any] = {
        "hostname": spec.name,
        "preserve_hostname": False,
        "users": [
            "default",
            {
                "name": spec.ssh.user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [spec.ssh.public_key],
            },
        ],
        "ssh_pwauth": False,
        "disable_root": True,
    }
    if host_private_key and host_public_key:
        cfg["ssh_deletekeys"] = True
        # Only the injected key: cc_ssh generates a listed type only when its key file is missing, and
        # ssh_deletekeys removed the image's others, so the pinned ed25519 key is the one sshd offers. An
        # empty list fails `cloud-init schema` (minItems 1) and reports cloud-init as degraded.
        cfg["ssh_genkeytypes"] = ["ed25519"]
        cfg["ssh_keys"] = {"ed25519_private": host_private_key, "ed25519_public": host_public_key}
    if extra:
        cfg.update(extra)
    return "#cloud-config\n" + yaml.safe_dump(cfg, sort_keys=False, width=4096)


def host_key(name: str, parent: "pulumi.Resource", extra: str) -> Any:
    """A per-VM ed25519 host key as a ``tls.PrivateKey`` child of ``parent``."""
    try:
        import pulumi
        import pulumi_tls as tls
    except ImportError:
        raise MissingDependencyError("generating the VM's SSH host key", extra, "pulumi_tls") from None
    secret = ["private_key_openssh"]
    child = getattr(parent, "child", None)
    if child is not None:  # a polyvm VirtualMachine: keeps the key across a rename (alias)
        rname, opts = child("host-key", additional_secret_outputs=secret)
    else:
        rname, opts = f"{name}-host-key", pulumi.ResourceOptions(parent=parent, additional_secret_outputs=secret)
    return tls.PrivateKey(rname, algorithm="ED25519", opts=opts)


def user_data_output(spec: VmSpec, key: Any) -> "pulumi.Output[str]":
    """User data as a secret Output (it carries the host's private key)."""
    import pulumi

    return pulumi.Output.secret(pulumi.Output.all(key.private_key_openssh, key.public_key_openssh).apply(
        lambda kv: render_user_data(spec, kv[0], kv[1].strip())))
