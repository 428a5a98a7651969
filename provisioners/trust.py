"""Host-key trust and client keys: pinned keys, known_hosts (trust on first use), fingerprints, key loading.

Pure of any connection: :class:`polyvm.provisioners.connection.Connection` asks :func:`verify_host_key`
whether to trust what a server shows and :func:`client_keys` which keys to offer.
"""

from __future__ import annotations

import base64
import enum
import fcntl
import hashlib
import io
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import paramiko

from polyvm.errors import ConfigError, HostKeyError

log = logging.getLogger("polyvm.provisioners.trust")

#: Where trust-on-first-use host keys are recorded unless ``known_hosts`` is given.
DEFAULT_KNOWN_HOSTS = "~/.config/polyvm/known_hosts"


class HostKeyPolicy(enum.Enum):
    """How a server's host key is trusted.

    PINNED_OR_TOFU: verify against ``host_key`` when given; otherwise against the known_hosts file, recording
    the key on first use; a changed key is refused. KNOWN_ONLY: like PINNED_OR_TOFU but never records a new
    key (unknown hosts are refused). INSECURE_ACCEPT_ANY: accept whatever key the server shows (logged as a
    warning every time) — only for throw-away hosts.
    """

    PINNED_OR_TOFU = "pinned_or_tofu"
    KNOWN_ONLY = "known_only"
    INSECURE_ACCEPT_ANY = "insecure_accept_any"


def parse_public_keys(value: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """``[(key_type, base64_blob), ...]`` from OpenSSH public key text or known_hosts lines (one per line).

    Raises :class:`ConfigError` on text that holds no key.
    """
    if not value:
        return []
    lines = value.splitlines() if isinstance(value, str) else [ln for v in value for ln in str(v).splitlines()]
    keys: list[tuple[str, str]] = []
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for i, w in enumerate(words[:-1]):
            if w.startswith(("ssh-", "ecdsa-sha2-", "sk-")):
                blob = words[i + 1]
                try:
                    raw = base64.b64decode(blob, validate=True)
                except ValueError:
                    break
                if paramiko.Message(raw).get_text() != w:
                    raise ConfigError(f"host key {w} {blob[:16]}... is damaged (type inside the key differs)")
                keys.append((w, blob))
                break
        else:
            raise ConfigError(f"not an SSH public key: {line[:60]!r}")
    return keys


def fingerprint(blob_b64: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a base64 public key blob."""
    digest = hashlib.sha256(base64.b64decode(blob_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_private_key(text: str | bytes, *, password: str | None = None, source: str = "private key") -> paramiko.PKey:
    """A paramiko key from OpenSSH or PEM private key text (ed25519, ecdsa, rsa). Errors never echo the key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = text.encode() if isinstance(text, str) else text
    pw = password.encode() if password else None
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=pw)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=pw)
    except (ValueError, TypeError, Exception) as exc:  # noqa: BLE001 - the message must not carry key bytes
        raise ConfigError(f"{source} cannot be read ({type(exc).__name__}); expected an OpenSSH or PEM "
                          "ed25519/ecdsa/rsa private key") from None
    cls: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        cls = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        cls = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        cls = paramiko.RSAKey
    else:
        raise ConfigError(f"{source}: unsupported key type {type(loaded).__name__}")
    # Re-encode as unencrypted OpenSSH text, which every paramiko key class reads (PKCS#8 PEM it does not).
    text_out = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
    return cls.from_private_key(io.StringIO(text_out))


_known_hosts_locks: dict[str, threading.Lock] = {}
_known_hosts_locks_guard = threading.Lock()


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    """A known_hosts file in OpenSSH format, safe to update from many threads and processes at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        with _known_hosts_locks_guard:
            self._lock = _known_hosts_locks.setdefault(str(self.path), threading.Lock())

    def lookup(self, name: str) -> dict[str, str]:
        """``{key_type: base64}`` recorded for ``name`` (hashed entries included)."""
        if not self.path.exists():
            return {}
        hk = paramiko.HostKeys()
        try:
            hk.load(str(self.path))
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"cannot read known_hosts file {self.path}: {exc}") from None
        found = hk.lookup(name) or {}
        return {t: k.get_base64() for t, k in found.items()}

    def check_or_record(self, name: str, key_type: str, blob: str, *, record: bool) -> str:
        """'known' if the key is recorded, 'recorded' if it was just added; HostKeyError if it differs."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                known = self.lookup(name)
                if known.get(key_type) == blob:
                    return "known"
                if known:
                    recorded = ", ".join(f"{t} {fingerprint(b)}" for t, b in known.items())
                    raise HostKeyError(
                        f"host key for {name} CHANGED: server shows {key_type} {fingerprint(blob)}, but "
                        f"{self.path} records {recorded}. If the host was rebuilt, remove its line from that "
                        "file; otherwise someone may be intercepting the connection.")
                if not record:
                    raise HostKeyError(f"host {name} is not in {self.path} and no host key is pinned "
                                       f"(server shows {key_type} {fingerprint(blob)})")
                os.write(fd, f"{name} {key_type} {blob}\n".encode())
                return "recorded"
            finally:
                os.close(fd)


def default_known_hosts() -> Path:
    """``$POLYVM_KNOWN_HOSTS`` or :data:`DEFAULT_KNOWN_HOSTS`, expanded."""
    return Path(os.environ.get("POLYVM_KNOWN_HOSTS") or DEFAULT_KNOWN_HOSTS).expanduser()


def preferred_key_types(pinned: Sequence[tuple[str, str]], known_hosts: Path, host: str, port: int,
                        policy: HostKeyPolicy) -> list[str]:
    """Host key algorithms to negotiate first: the pinned key types, else those recorded for the host."""
    types = [t for t, _ in pinned]
    if not types and policy is not HostKeyPolicy.INSECURE_ACCEPT_ANY:
        types = list(KnownHosts(known_hosts).lookup(known_hosts_name(host, port)))
    out: list[str] = []
    for t in types:
        for alg in (["rsa-sha2-512", "rsa-sha2-256"] if t == "ssh-rsa" else [t]):
            if alg not in out:
                out.append(alg)
    return out


def verify_host_key(key: paramiko.PKey, *, label: str, host: str, port: int, pinned: Sequence[tuple[str, str]],
                    known_hosts: Path, policy: HostKeyPolicy) -> str:
    """Trust ``key`` or raise :class:`HostKeyError`. Returns how: pinned, known, recorded, accepted-insecurely."""
    key_type, blob = key.get_name(), key.get_base64()
    if key_type in ("rsa-sha2-256", "rsa-sha2-512"):
        key_type = "ssh-rsa"
    if policy is HostKeyPolicy.INSECURE_ACCEPT_ANY:
        log.warning("%s: INSECURE: accepting host key %s %s without verification", label, key_type,
                    fingerprint(blob))
        return "accepted-insecurely"
    if pinned:
        if (key_type, blob) in pinned:
            return "pinned"
        shown = ", ".join(f"{t} {fingerprint(b)}" for t, b in pinned)
        raise HostKeyError(f"{label}: host key MISMATCH: server shows {key_type} {fingerprint(blob)}, "
                           f"pinned {shown}. Refusing to connect (possible interception, or the host "
                           "was rebuilt and the pinned key is stale).")
    status = KnownHosts(known_hosts).check_or_record(known_hosts_name(host, port), key_type, blob,
                                                     record=policy is HostKeyPolicy.PINNED_OR_TOFU)
    if status == "recorded":
        log.info("%s: first use, recorded host key %s %s in %s", label, key_type, fingerprint(blob), known_hosts)
    return status


def client_keys(private_key: str | None, private_key_path: Path | None, password: str | None, *,
                label: str) -> list[paramiko.PKey]:
    """The keys to offer: the given key text and/or file; without either, ssh-agent then ~/.ssh/id_*."""
    keys: list[paramiko.PKey] = []
    if private_key:
        keys.append(load_private_key(private_key, password=password, source=f"private key for {label}"))
    if private_key_path:
        try:
            data = private_key_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read private key file {private_key_path}: {exc.strerror}") from None
        keys.append(load_private_key(data, password=password, source=f"private key file {private_key_path}"))
    if not keys:
        try:
            keys.extend(paramiko.Agent().get_keys())
        except paramiko.SSHException:
            pass
        for fname in ("id_ed25519", "id_ecdsa", "id_rsa"):
            p = Path("~/.ssh").expanduser() / fname
            if p.exists():
                try:
                    keys.append(load_private_key(p.read_bytes(), source=str(p)))
                except ConfigError:
                    continue
    if not keys:
        raise ConfigError(f"{label}: no private key given (private_key, private_key_path, ssh-agent or "
                          "~/.ssh/id_*)")
    return keys
