"""Cloud-init user data shared by every cloud backend (pure), and the generated host key (Pulumi).

The host key is generated per VM as a pulumi-tls PrivateKey (stable across runs, secret in state) and
written by cloud-init's ``ssh_keys`` module, so the VM's host key is known before it boots and SSH is
pinned from the first connection.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from .errors import MissingDependencyError
from .spec import VmSpec

if TYPE_CHECKING:
    import pulumi


def render_user_data(spec: VmSpec, host_private_key: str | None, host_public_key: str | None,
                     *, extra: dict[str, Any] | None = None) -> str:
    """The ``#cloud-config`` document: login user with the spec's key, no passwords, the given host key."""
    return render_cloud_config(spec.name, spec.ssh.user, [spec.ssh.public_key], host_private_key,
                               host_public_key, extra=extra)


def render_cloud_config(hostname: str, user: str, authorized_keys: Sequence[str], host_private_key: str | None,
                        host_public_key: str | None, *, extra: dict[str, Any] | None = None) -> str:
    """:func:`render_user_data` from its parts (the local backend's provider has the spec's values, not the
    spec): one renderer for every backend, the local one included."""
    cfg: dict[str, Any] = {
        "hostname": hostname,
        "preserve_hostname": False,
        "users": [
            "default",
            {
                "name": user,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [k.strip() for k in authorized_keys if k.strip()],
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


#: Seconds a step waits for cloud-init to finish before giving up (``POLYVM_BOOT_WAIT`` overrides it).
BOOT_WAIT_SECONDS = 600.0


def boot_wait_seconds() -> float:
    """The bound of :func:`wait_script`: ``POLYVM_BOOT_WAIT`` (seconds) or :data:`BOOT_WAIT_SECONDS`."""
    raw = os.environ.get("POLYVM_BOOT_WAIT", "")
    try:
        value = float(raw) if raw.strip() else BOOT_WAIT_SECONDS
    except ValueError:
        from .errors import ConfigError

        raise ConfigError(f"POLYVM_BOOT_WAIT must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        from .errors import ConfigError

        raise ConfigError(f"POLYVM_BOOT_WAIT must be positive, not {raw!r}")
    return value


def wait_script(timeout: float | None = None, *, poll: float = 2.0) -> str:
    """POSIX shell that waits, at most ``timeout`` seconds, for cloud-init to finish (it may hold the
    package manager's lock on a VM that just booted).

    ``cloud-init status --wait`` loops while the status is "not run" (cloud-init 22.4
    cloudinit/cmd/status.py): on an image where cloud-init is installed but did not run (this machine's
    local hosts, a template with cloud-init disabled) it never returns. Here "not run", "disabled",
    "done", "error" and "degraded ..." all count as finished, only "running" is waited for, each status
    query is itself bounded, and giving up fails the step with what was waited for and why (exit 75)."""
    limit = int(boot_wait_seconds() if timeout is None else timeout)
    limit = max(1, limit)
    hint = shlex.quote(f"polyvm: gave up waiting for cloud-init after {limit}s")
    return f"""if command -v cloud-init >/dev/null 2>&1; then
  pvm_end=$(( $(date +%s) + {limit} ))
  while :; do
    pvm_st=$(timeout 60 cloud-init status 2>/dev/null | sed -n 's/^status: *//p' | head -n 1) || pvm_st=""
    case "$pvm_st" in
      running) ;;
      *) break ;;
    esac
    if [ "$(date +%s)" -ge "$pvm_end" ]; then
      echo {hint}": 'cloud-init status' still says '$pvm_st' (it may hold the package manager while it" \
        "runs; see 'cloud-init status --long' on the VM, or set POLYVM_BOOT_WAIT to wait longer)" >&2
      exit 75
    fi
    sleep {poll:g}
  done
fi"""
