"""SSH connections on paramiko: wait for a booting VM, verify its host key, run checked commands, copy files.

One :class:`Connection` is one TCP connection and one SSH handshake per host, reused for every command and
copy. Commands run on exec channels of that connection; file copies check remote hashes for many files in
one command and send every changed file in one tar stream on one channel, so a re-run moves almost no
bytes and costs two round trips whatever the number of files.
"""

from __future__ import annotations

import base64
import enum
import errno
import fcntl
import hashlib
import io
import logging
import os
import random
import secrets as _secrets
import select
import shlex
import socket
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import paramiko

from polyvm.errors import (
    AuthenticationError,
    CommandError,
    ConfigError,
    ConnectTimeoutError,
    HostKeyError,
    ProvisionError,
)

log = logging.getLogger("polyvm.provisioners.ssh")
# paramiko logs every failed handshake attempt with a traceback; while waiting for a booting VM that is
# noise. Its transports log to this channel instead, silent unless someone configures it.
_WIRE_LOG = "polyvm.provisioners.ssh.wire"
logging.getLogger(_WIRE_LOG).addHandler(logging.NullHandler())
logging.getLogger(_WIRE_LOG).propagate = False

MASK = "********"
#: Where trust-on-first-use host keys are recorded unless ``known_hosts`` is given.
DEFAULT_KNOWN_HOSTS = "~/.config/polyvm/known_hosts"
STDERR_TAIL_LINES = 15
STDERR_TAIL_CHARS = 2000
_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ABSENT_EXIT = 100  # get_text: the file does not exist


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


# --------------------------------------------------------------------------------------------------------
# Small pure helpers (unit-tested without SSH)
# --------------------------------------------------------------------------------------------------------

def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``********`` (longest first, so overlapping secrets mask fully)."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def tail(text: str, lines: int = STDERR_TAIL_LINES, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text`` (at most ``chars`` characters), trailing blanks removed."""
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out[-chars:]


def backoff_delays(initial: float = 1.0, maximum: float = 20.0, factor: float = 2.0,
                   jitter: float = 0.3, rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with jitter: about 1, 2, 4, 8, 16, 20, 20, ... seconds, each varied by ±``jitter``."""
    rng = rng or random.Random()
    n = 0
    while True:
        base = min(maximum, initial * factor ** n)
        yield max(0.05, base * rng.uniform(1 - jitter, 1 + jitter))
        n += 1


def encode_env(env: Mapping[str, str]) -> str:
    """One shell line that exports ``env``; read from stdin so values never appear in a remote argv."""
    parts = ["__polyvm_nl=$(printf '\\nx'); __polyvm_nl=${__polyvm_nl%x}"]
    for k, v in env.items():
        if not k or k[0].isdigit() or not set(k) <= _ENV_NAME_OK:
            raise ValueError(f"invalid environment variable name {k!r}")
        pieces = [shlex.quote(p) for p in str(v).split("\n")]
        parts.append(f"export {k}=" + '"$__polyvm_nl"'.join(pieces))
    parts.append("unset __polyvm_nl")
    return "; ".join(parts)


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


# --------------------------------------------------------------------------------------------------------
# Known hosts (trust on first use)
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# Results and statistics
# --------------------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    exit_status: int
    stdout: str
    stderr: str
    duration: float


@dataclass
class ConnectionStats:
    """What a connection did; tests assert on these instead of on timing."""

    handshakes: int = 0          # successful SSH handshakes (one per connect)
    connect_attempts: int = 0    # TCP/SSH attempts made by the last connect()
    retries: int = 0             # attempts that were retried (across connects)
    channels: int = 0            # exec channels opened
    bytes_uploaded: int = 0      # file content bytes sent by put()/put_files()
    files_uploaded: int = 0
    files_skipped: int = 0       # remote content (and mode/owner) already matched
    last_connect_causes: list[str] = field(default_factory=list)


@dataclass
class Upload:
    """One file for :meth:`Connection.put_files`."""

    content: bytes | str | Path
    remote_path: str
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None

    def data(self) -> bytes:
        if isinstance(self.content, Path):
            return self.content.read_bytes()
        return self.content.encode() if isinstance(self.content, str) else bytes(self.content)


# --------------------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------------------

_RETRYABLE_ERRNOS = {errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                     errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPIPE}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host"
    if isinstance(exc, EOFError):
        return "connection closed during SSH handshake (EOF)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (paramiko.AuthenticationException, HostKeyError, AuthenticationError, ConfigError)):
        return False
    if isinstance(exc, paramiko.IncompatiblePeer):
        return False
    if isinstance(exc, (socket.timeout, TimeoutError, EOFError, ConnectionError, socket.gaierror)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _RETRYABLE_ERRNOS or exc.errno is None
    return isinstance(exc, paramiko.SSHException)  # banner errors, channel open failures via a bastion


class _ChannelWriter:
    """File-like stdin of an exec channel, for streaming writers (tarfile)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self.sent = 0

    def write(self, data: bytes) -> int:
        self.chan.sendall(data)
        self.sent += len(data)
        return len(data)


StdinSource = bytes | str | Callable[[_ChannelWriter], None] | None


class Connection:
    """One SSH connection to one host, opened on first use (or ``with``) and reused for every step.

    ``private_key`` (OpenSSH/PEM text) is a secret: it is masked in every message and never in ``repr``.
    ``deadline`` bounds the whole wait for a host that is still booting; ``connect_timeout`` each attempt.
    ``sudo`` (default: True when ``user`` is not root) runs commands and copies through ``sudo -n``.
    """

    def __init__(self, host: str, user: str = "root", *, port: int = 22, private_key: str | None = None,
                 private_key_path: str | os.PathLike[str] | None = None, private_key_password: str | None = None,
                 host_key: str | Sequence[str] | None = None, known_hosts: str | os.PathLike[str] | None = None,
                 host_key_policy: HostKeyPolicy = HostKeyPolicy.PINNED_OR_TOFU,
                 bastion: "Connection | None" = None, connect_timeout: float = 10.0, deadline: float = 300.0,
                 sudo: bool | None = None, keepalive: float = 15.0, retry_initial: float = 1.0,
                 retry_max: float = 20.0, secrets: Sequence[str] = (), name: str | None = None) -> None:
        if not host:
            raise ConfigError("Connection needs a host")
        self.host = host
        self.user = user
        self.port = int(port)
        self.private_key = private_key
        self.private_key_path = Path(private_key_path).expanduser() if private_key_path else None
        self.private_key_password = private_key_password
        self.pinned_keys = parse_public_keys(host_key)
        self.known_hosts = Path(known_hosts or os.environ.get("POLYVM_KNOWN_HOSTS") or DEFAULT_KNOWN_HOSTS
                                ).expanduser()
        self.host_key_policy = HostKeyPolicy(host_key_policy)
        self.bastion = bastion
        self.connect_timeout = float(connect_timeout)
        self.deadline = float(deadline)
        self.sudo = (user != "root") if sudo is None else bool(sudo)
        self.keepalive = keepalive
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.secrets: list[str] = [s for s in secrets if s]
        self.name = name or self.label
        self.stats = ConnectionStats()
        self.host_key_status: str | None = None  # "pinned" | "known" | "recorded" | "accepted-insecurely"
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._transport: paramiko.Transport | None = None
        self._lock = threading.RLock()
        self._holders = 0
        self._bastion_held = False

    # -- pickling: never a live client ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in ("_transport", "_lock", "_holders", "_bastion_held"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    @property
    def label(self) -> str:
        port = f":{self.port}" if self.port != 22 else ""
        via = f" via {self.bastion.label}" if self.bastion is not None else ""
        return f"{self.user}@{self.host}{port}{via}"

    def __repr__(self) -> str:
        return f"Connection({self.label!r})"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> "Connection":
        """Build from a plain mapping (inventory entry, Pulumi inputs). ``bastion`` may be a nested mapping."""
        merged = {**(defaults or {}), **{k: v for k, v in data.items() if v is not None}}
        allowed = {"host", "user", "port", "private_key", "private_key_path", "private_key_password", "host_key",
                   "known_hosts", "bastion", "connect_timeout", "deadline", "sudo", "name",
                   "insecure_accept_any_host_key", "keepalive", "retry_initial", "retry_max"}
        unknown = set(merged) - allowed
        if unknown:
            raise ConfigError(f"unknown connection setting(s): {', '.join(sorted(unknown))}")
        if "host" not in merged:
            raise ConfigError("connection setting 'host' is required")
        bastion = merged.pop("bastion", None)
        if isinstance(bastion, Mapping):
            inherit = {k: v for k, v in (defaults or {}).items() if k in ("private_key", "private_key_path",
                                                                          "known_hosts", "user")}
            bastion = cls.from_mapping(bastion, inherit)
        insecure = bool(merged.pop("insecure_accept_any_host_key", False))
        policy = HostKeyPolicy.INSECURE_ACCEPT_ANY if insecure else HostKeyPolicy.PINNED_OR_TOFU
        return cls(bastion=bastion, host_key_policy=policy, **merged)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> "Connection":
        """Connect (waiting for the host up to ``deadline``) unless connected; count one holder."""
        with self._lock:
            self._ensure()
            self._holders += 1
        return self

    def close(self) -> None:
        """Drop one holder; disconnect when none is left (or when used without ``open``)."""
        with self._lock:
            if self._holders > 0:
                self._holders -= 1
            if self._holders == 0:
                self._disconnect()

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def _disconnect(self) -> None:
        t, self._transport = self._transport, None
        if t is not None:
            t.close()
        if self._bastion_held and self.bastion is not None:
            self._bastion_held = False
            self.bastion.close()

    def _ensure(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport
            if self._transport is not None:
                self._disconnect()
            self._transport = self._connect()
            return self._transport

    def connect(self) -> "Connection":
        """Connect now (idempotent). Raises AuthenticationError/HostKeyError at once, ConnectTimeoutError late."""
        self._ensure()
        return self

    def _connect(self) -> paramiko.Transport:
        keys = self._load_keys()  # config errors surface before any network traffic
        if self.bastion is not None and not self._bastion_held:
            self.bastion.open()
            self._bastion_held = True
        start = time.monotonic()
        end = start + self.deadline
        delays = backoff_delays(self.retry_initial, self.retry_max)
        causes: list[str] = []
        self.stats.connect_attempts = 0
        self.stats.last_connect_causes = causes
        try:
            while True:
                self.stats.connect_attempts += 1
                attempt_timeout = max(0.5, min(self.connect_timeout, end - time.monotonic()))
                try:
                    t = self._connect_once(keys, attempt_timeout)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if not _is_retryable(exc):
                        raise self._fatal(exc) from None
                    cause = mask(_describe(exc), self._all_secrets())
                    causes.append(cause)
                    now = time.monotonic()
                    delay = next(delays)
                    if now + delay >= end:
                        tried = f"{self.stats.connect_attempts} attempt(s) over {now - start:.1f}s"
                        raise ConnectTimeoutError(
                            f"{self.label}: cannot connect within the {self.deadline:g}s deadline ({tried}, "
                            f"each with a {self.connect_timeout:g}s timeout, backoff up to {self.retry_max:g}s); "
                            f"last error: {cause}") from None
                    self.stats.retries += 1
                    log.info("%s: not reachable yet (%s); retry %d in %.1fs", self.label, cause,
                             self.stats.connect_attempts, delay)
                    time.sleep(delay)
                    continue
                self.stats.handshakes += 1
                return t
        except BaseException:
            if self._bastion_held and self.bastion is not None:
                self._bastion_held = False
                self.bastion.close()
            raise

    def _fatal(self, exc: BaseException) -> ProvisionError:
        if isinstance(exc, ProvisionError) or isinstance(exc, ConfigError):
            return exc  # type: ignore[return-value]
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthenticationError(f"{self.label}: authentication failed for user {self.user!r} "
                                       f"({mask(_describe(exc), self._all_secrets())}); check the user name and "
                                       "that the private key's public half is in authorized_keys")
        if isinstance(exc, paramiko.IncompatiblePeer):
            return ProvisionError(f"{self.label}: no common SSH algorithms with the server: {_describe(exc)}")
        return ProvisionError(f"{self.label}: {mask(_describe(exc), self._all_secrets())}")

    def _load_keys(self) -> list[paramiko.PKey]:
        keys: list[paramiko.PKey] = []
        if self.private_key:
            keys.append(load_private_key(self.private_key, password=self.private_key_password,
                                         source=f"private key for {self.label}"))
        if self.private_key_path:
            try:
                data = self.private_key_path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read private key file {self.private_key_path}: {exc.strerror}") from None
            keys.append(load_private_key(data, password=self.private_key_password,
                                         source=f"private key file {self.private_key_path}"))
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
            raise ConfigError(f"{self.label}: no private key given (private_key, private_key_path, ssh-agent or "
                              "~/.ssh/id_*)")
        return keys

    def _open_socket(self, timeout: float) -> socket.socket | paramiko.Channel:
        if self.bastion is not None:
            bt = self.bastion._ensure()
            return bt.open_channel("direct-tcpip", (self.host, self.port), ("127.0.0.1", 0), timeout=timeout)
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _connect_once(self, keys: list[paramiko.PKey], timeout: float) -> paramiko.Transport:
        sock = self._open_socket(timeout)
        t = paramiko.Transport(sock)
        t.set_log_channel(_WIRE_LOG)
        try:
            t.banner_timeout = timeout
            t.handshake_timeout = timeout
            t.auth_timeout = max(timeout, 10.0)
            opts = t.get_security_options()
            preferred = self._preferred_key_types()
            if preferred:
                opts.key_types = preferred + [k for k in opts.key_types if k not in preferred]
            # curve25519 first: it is the cheapest key exchange paramiko offers.
            kex = list(opts.kex)
            if "curve25519-sha256@libssh.org" in kex:
                kex.remove("curve25519-sha256@libssh.org")
                kex.insert(0, "curve25519-sha256@libssh.org")
                opts.kex = kex
            t.start_client(timeout=timeout)
            if not (t.is_active() and t.initial_kex_done):
                raise TimeoutError("SSH handshake timed out")
            self._verify_host_key(t.get_remote_server_key())
            self._authenticate(t, keys)
            if self.keepalive:
                t.set_keepalive(int(self.keepalive))
            return t
        except BaseException:
            t.close()
            raise

    def _preferred_key_types(self) -> list[str]:
        types = [t for t, _ in self.pinned_keys]
        if not types and self.host_key_policy is not HostKeyPolicy.INSECURE_ACCEPT_ANY:
            types = list(KnownHosts(self.known_hosts).lookup(known_hosts_name(self.host, self.port)))
        out: list[str] = []
        for t in types:
            for alg in (["rsa-sha2-512", "rsa-sha2-256"] if t == "ssh-rsa" else [t]):
                if alg not in out:
                    out.append(alg)
        return out

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        key_type, blob = key.get_name(), key.get_base64()
        if key_type in ("rsa-sha2-256", "rsa-sha2-512"):
            key_type = "ssh-rsa"
        name = known_hosts_name(self.host, self.port)
        if self.host_key_policy is HostKeyPolicy.INSECURE_ACCEPT_ANY:
            log.warning("%s: INSECURE: accepting host key %s %s without verification", self.label, key_type,
                        fingerprint(blob))
            self.host_key_status = "accepted-insecurely"
            return
        if self.pinned_keys:
            if (key_type, blob) in self.pinned_keys:
                self.host_key_status = "pinned"
                return
            pinned = ", ".join(f"{t} {fingerprint(b)}" for t, b in self.pinned_keys)
            raise HostKeyError(f"{self.label}: host key MISMATCH: server shows {key_type} {fingerprint(blob)}, "
                               f"pinned {pinned}. Refusing to connect (possible interception, or the host "
                               "was rebuilt and the pinned key is stale).")
        self.host_key_status = KnownHosts(self.known_hosts).check_or_record(
            name, key_type, blob, record=self.host_key_policy is HostKeyPolicy.PINNED_OR_TOFU)
        if self.host_key_status == "recorded":
            log.info("%s: first use, recorded host key %s %s in %s", self.label, key_type, fingerprint(blob),
                     self.known_hosts)

    def _authenticate(self, t: paramiko.Transport, keys: list[paramiko.PKey]) -> None:
        last: Exception | None = None
        for key in keys:
            try:
                remaining = t.auth_publickey(self.user, key)
            except paramiko.BadAuthenticationType as exc:
                raise AuthenticationError(f"{self.label}: server does not accept public key authentication "
                                          f"(allowed: {', '.join(exc.allowed_types) or 'none'})") from None
            except paramiko.AuthenticationException as exc:
                last = exc
                continue
            if not remaining and t.is_authenticated():
                return
        fps = ", ".join(f"{k.get_name()} {k.fingerprint}" for k in keys)
        raise AuthenticationError(f"{self.label}: authentication failed: the server refused the private key(s) "
                                  f"{fps} for user {self.user!r}" + (f" ({_describe(last)})" if last else ""))

    def _all_secrets(self, extra: Iterable[str] = ()) -> list[str]:
        base = list(self.secrets) + list(extra)
        if self.private_key:
            base.append(self.private_key)
        if self.private_key_password:
            base.append(self.private_key_password)
        return base

    # -- commands -----------------------------------------------------------------------------------------
    def _wrap(self, command: str, *, sudo: bool, env: Mapping[str, str] | None) -> str:
        if env:
            command = 'IFS= read -r __polyvm_env || exit 97; eval "$__polyvm_env"; unset __polyvm_env; ' + command
        if sudo:
            return "sudo -n -- sh -c " + shlex.quote(command)
        if env:
            return "sh -c " + shlex.quote(command)
        return command

    def run(self, command: str, *, stdin: bytes | str | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None, sudo: bool | None = None, check: bool = True, name: str | None = None,
            secrets: Sequence[str] = ()) -> RunResult:
        """Run ``command`` through the remote shell; non-zero exit raises CommandError when ``check``.

        ``env`` values travel on stdin (never in a remote argv); ``secrets`` are masked in errors and logs;
        ``name`` is shown in errors instead of the command text.
        """
        use_sudo = self.sudo if sudo is None else sudo
        wire = self._wrap(command, sudo=use_sudo, env=env)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        if env:
            data = (encode_env(env) + "\n").encode() + (data or b"")
        all_secrets = self._all_secrets(list(secrets) + [str(v) for v in (env or {}).values()
                                                          if len(str(v)) >= 4 and _looks_secret_env(env, v)])
        label = name or _default_name(command, all_secrets)
        return self._exec(wire, data, timeout=timeout, check=check, label=label, secrets=all_secrets)

    def _exec(self, wire: str, stdin: StdinSource, *, timeout: float | None, check: bool, label: str,
              secrets: Sequence[str], ok_statuses: Sequence[int] = (0,),
              interact: Callable[[paramiko.Channel, bytearray], StdinSource] | None = None) -> RunResult:
        """Run ``wire`` verbatim on a new exec channel of this connection.

        ``interact(chan, out)``, when given, runs right after the command starts: it may read stdout into
        ``out`` and returns what to send on stdin (``stdin`` is then ignored).
        """
        t = self._ensure()
        start = time.monotonic()
        log.debug("%s: run %s", self.label, mask(wire, secrets)[:500])
        try:
            chan = t.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise CommandError(f"{self.label}: cannot open a session for {label!r}: {mask(_describe(exc), secrets)}",
                               host=self.host, command=label) from None
        self.stats.channels += 1
        out, err = bytearray(), bytearray()
        writer_error: list[BaseException] = []
        end = None if timeout is None else start + timeout
        writer: threading.Thread | None = None
        try:
            chan.fileno()  # enables select() on the channel
            chan.exec_command(wire)
            if interact is not None:
                chan.settimeout(timeout if timeout is not None else max(60.0, self.connect_timeout))
                try:
                    stdin = interact(chan, out)
                except socket.timeout:
                    raise CommandError(f"{self.label}: no reply from {label!r}", host=self.host,
                                       command=label) from None
                chan.settimeout(None)
            writer = self._start_stdin(chan, stdin, writer_error)
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                if chan.eof_received or chan.closed:
                    break
                wait = 1.0 if end is None else min(1.0, end - time.monotonic())
                if wait <= 0:
                    chan.close()
                    err_s = mask(err.decode(errors="replace"), secrets)
                    raise CommandError(f"{self.label}: {label!r} timed out after {timeout:g}s" + _tail_suffix(err_s),
                                       host=self.host, command=label, stderr_tail=tail(err_s))
                select.select([chan], [], [], wait)
                if not t.is_active():
                    break
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            status_wait = 10.0 if end is None else max(0.1, end - time.monotonic())
            chan.status_event.wait(status_wait)
            status = chan.exit_status if chan.exit_status_ready() else -1
        finally:
            chan.close()
            if writer is not None:
                writer.join(5)
        stdout_s = mask(out.decode(errors="replace"), secrets)
        stderr_s = mask(err.decode(errors="replace"), secrets)
        duration = time.monotonic() - start
        if status == -1:
            if not t.is_active():
                raise CommandError(
                    f"{self.label}: connection lost while running {label!r} (host went down or rebooted)"
                    + _tail_suffix(stderr_s), host=self.host, command=label, stderr_tail=tail(stderr_s))
            raise CommandError(f"{self.label}: {label!r} ended without an exit status (killed by a signal?)"
                               + _tail_suffix(stderr_s), host=self.host, command=label, stderr_tail=tail(stderr_s))
        result = RunResult(status, stdout_s, stderr_s, duration)
        if check and status not in ok_statuses:
            self._raise_for_status(result, label)
        if writer_error:
            # The command exited (with a status we checked) before reading all its input, e.g. a skipped
            # step or a command that ignores stdin; a lost connection would have left no exit status.
            log.debug("%s: %s did not read all of its input: %s", self.label, label, _describe(writer_error[0]))
        log.debug("%s: %s exited %d in %.2fs", self.label, label, status, duration)
        return result

    def _start_stdin(self, chan: paramiko.Channel, stdin: StdinSource,
                     errors: list[BaseException]) -> threading.Thread | None:
        def feed() -> None:
            try:
                if callable(stdin):
                    stdin(_ChannelWriter(chan))
                elif stdin:
                    chan.sendall(stdin if isinstance(stdin, bytes) else stdin.encode())
                chan.shutdown_write()
            except Exception as exc:  # noqa: BLE001 - reported after the exit status is known
                errors.append(exc)

        small = stdin is None or (isinstance(stdin, (bytes, str)) and len(stdin) <= 1 << 18)
        if small:
            feed()  # fits in the channel window: no thread needed
            return None
        th = threading.Thread(target=feed, daemon=True, name=f"stdin-{self.host}")
        th.start()
        return th

    def get_text(self, remote_path: str, *, sudo: bool | None = None) -> str | None:
        """Content of a remote text file, or None when it does not exist."""
        q = shlex.quote(remote_path)
        cmd = f"if [ -e {q} ]; then exec cat -- {q}; else exit {_ABSENT_EXIT}; fi"
        use_sudo = self.sudo if sudo is None else sudo
        r = self._exec(self._wrap(cmd, sudo=use_sudo, env=None), None, timeout=None, check=True,
                       label=f"read {remote_path}", secrets=self._all_secrets(), ok_statuses=(0, _ABSENT_EXIT))
        return None if r.exit_status == _ABSENT_EXIT else r.stdout

    # -- file copies --------------------------------------------------------------------------------------
    def put(self, content: bytes | str | Path, remote_path: str, *, mode: int = 0o644, owner: str | None = None,
            group: str | None = None) -> bool:
        """Copy one file atomically; False (nothing sent) when remote content, mode and owner already match."""
        return self.put_files([Upload(content, remote_path, mode, owner, group)])[0]

    def put_files(self, uploads: Sequence[Upload], *, make_dirs: Sequence[str] = ()) -> list[bool]:
        """Copy many files on one exec channel, atomically, skipping those that already match.

        The remote side first reports which targets and directories exist plus the sha256, mode and owner
        of the existing targets (one ``sha256sum`` and one ``stat`` for all of them). Only if something
        differs does it receive a one-line plan and a single tar stream of the changed files under
        temporary names next to their targets, which are chown'ed and renamed into place.

        Returns one ``changed`` flag per upload; unchanged files cost no transfer at all.
        """
        return self.put_files_and_run(uploads, make_dirs=make_dirs)[0]

    def put_files_and_run(self, uploads: Sequence[Upload], *, make_dirs: Sequence[str] = (),
                          then: str | None = None, then_files: Sequence[Upload] = (),
                          env: Mapping[str, str] | None = None, timeout: float | None = None,
                          name: str | None = None, secrets: Sequence[str] = ()) -> tuple[list[bool], RunResult | None]:
        """:meth:`put_files`, then (when the copy succeeded) run ``then`` in the same channel, saving an SSH
        session per step. ``then_files`` (e.g. a script) are always sent and not counted as copies; ``then``
        runs with stdin from /dev/null and ``env`` like :meth:`run`. Returns the flags and ``then``'s
        RunResult (None without ``then``); a non-zero exit of ``then`` raises CommandError.
        """
        if not uploads and not make_dirs and then is None:
            return [], None
        paths = [u.remote_path for u in uploads]
        if len(set(paths)) != len(paths):
            raise ConfigError("the same remote path is given twice in one copy")
        for p in [*paths, *make_dirs, *(u.remote_path for u in then_files)]:
            if not p or "\n" in p or "\0" in p:
                raise ConfigError(f"remote path must be a non-empty single line: {p!r}")
        for p in paths:
            if p.endswith("/"):
                raise ConfigError(f"remote path must name a file, not a directory: {p!r}")
        dirs = list(dict.fromkeys([*make_dirs, *(str(PurePosixPath(p).parent) for p in paths)]))
        datas = [u.data() for u in uploads]
        extra = [(u, u.data()) for u in then_files]
        changed: list[bool] = []
        sent: list[int] = []
        n, nd = len(paths), len(dirs)
        marker = f"__polyvm_copied_{_secrets.token_hex(6)}__"
        all_secrets = self._all_secrets(list(secrets) + [str(v) for v in (env or {}).values()
                                                          if len(str(v)) >= 4 and _looks_secret_env(env, v)])

        def read_lines(chan: paramiko.Channel, out: bytearray, count: int) -> list[str] | None:
            while out.count(b"\n") < count:
                chunk = chan.recv(1 << 16)
                if not chunk:
                    return None  # the remote side failed (sudo, missing tools): its stderr tells why
                out += chunk
            return bytes(out).decode(errors="replace").split("\n")[:count]

        def interact(chan: paramiko.Channel, out: bytearray) -> StdinSource:
            head = read_lines(chan, out, n + nd)
            if head is None:
                return None
            k = head[:n].count("f")
            lines = read_lines(chan, out, n + nd + 2 * k)
            if lines is None:
                return None
            del out[:]
            hashes = iter(lines[n + nd:n + nd + k])
            stats = iter(lines[n + nd + k:])
            send: list[tuple[Upload, bytes]] = []
            fix: list[Upload] = []
            for u, data, exists in zip(uploads, datas, lines[:n]):
                if exists == "f":
                    digest = next(hashes).lstrip("\\")[:64]
                    state = next(stats).split()
                else:
                    digest, state = "", []
                if len(state) != 5 or digest != hashlib.sha256(data).hexdigest():
                    send.append((u, data))
                    changed.append(True)
                elif not _meta_matches(u, state):
                    fix.append(u)
                    changed.append(True)
                else:
                    changed.append(False)
            missing = [d for d, e in zip(dirs, lines[n:n + nd]) if e != "d"]
            if not send and not fix and not missing and then is None:
                return None  # EOF right away: nothing to do, nothing sent
            sent[:] = [sum(len(d) for _, d in send), len(send)]
            plan, members = _upload_plan([*send, *extra], fix, missing)
            head_lines = plan.encode() + b"\n"
            if then is not None:
                head_lines += ((encode_env(env) if env else ":") + "\n").encode()

            def stream(w: _ChannelWriter) -> None:
                w.write(head_lines)
                if members:
                    with tarfile.open(fileobj=w, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore
                        now = int(time.time())
                        for name_, data, mode in members:
                            info = tarfile.TarInfo(name_)
                            info.size, info.mode, info.mtime = len(data), mode & 0o7777, now
                            tar.addfile(info, io.BytesIO(data))
            return stream

        # POSIX sh: one line per target (f: regular file, -: absent), one per directory (d / -), then one
        # sha256sum and one stat over the existing targets; then wait for the plan line (EOF: nothing to do).
        script = ('n=$1; shift; i=0; for f do shift; i=$((i+1)); if [ $i -le $n ]; then '
                  'if [ -f "$f" ]; then echo f; set -- "$@" "$f"; else echo -; fi; '
                  'elif [ -d "$f" ]; then echo d; else echo -; fi; done; '
                  'if [ $# -gt 0 ]; then sha256sum -- "$@" || exit 1; '
                  'stat -L -c "%a %U %G %u %g" -- "$@" || exit 1; fi; '
                  'IFS= read -r __polyvm_plan || exit 0; ')
        if then is None:
            script += 'eval "$__polyvm_plan"'
        else:
            script += ('IFS= read -r __polyvm_env || exit 0; (eval "$__polyvm_plan") || exit $?; '
                       f'echo {marker}; eval "$__polyvm_env"; unset __polyvm_plan __polyvm_env; '
                       f'exec </dev/null; {then}')
        cmd = ("sh -c " + shlex.quote(script) + f" polyvm {n} "
               + " ".join(shlex.quote(p) for p in [*paths, *dirs]))
        wire = ("sudo -n -- " + cmd) if self.sudo else cmd
        copy_label = f"copy {n} file(s)"
        if then is None:
            self._exec(wire, None, timeout=timeout, check=True, label=copy_label, secrets=all_secrets,
                       interact=interact)
            result = None
        else:
            label = name or _default_name(then, all_secrets)
            r = self._exec(wire, None, timeout=timeout, check=False, label=f"{copy_label}, then {label!r}",
                           secrets=all_secrets, interact=interact)
            before, found, after = r.stdout.partition(marker + "\n")
            if not found:
                self._raise_for_status(RunResult(r.exit_status or 1, before, r.stderr, r.duration), copy_label)
                raise ProvisionError(f"{self.label}: {copy_label}: unexpected reply from the host")
            result = RunResult(r.exit_status, after, r.stderr, r.duration)
        if sent:
            self.stats.bytes_uploaded += sent[0]
            self.stats.files_uploaded += sent[1]
        self.stats.files_skipped += changed.count(False)
        if result is not None:
            try:
                self._raise_for_status(result, label)
            except CommandError as exc:
                exc.copy_flags = list(changed)  # type: ignore[attr-defined] - the copies did go through
                raise
        return changed, result

    def _raise_for_status(self, r: RunResult, label: str) -> None:
        if r.exit_status == 0:
            return
        hint = ""
        if "sudo: a password is required" in r.stderr or "sudo: a terminal is required" in r.stderr:
            hint = f" (user {self.user!r} needs password-less sudo)"
        raise CommandError(f"{self.label}: {label!r} failed with exit code {r.exit_status}{hint}"
                           + _tail_suffix(r.stderr), host=self.host, command=label, exit_code=r.exit_status,
                           stderr_tail=tail(r.stderr))


def _upload_plan(send: Sequence[tuple[Upload, bytes]], fix: Sequence[Upload],
                 missing_dirs: Sequence[str]) -> tuple[str, list[tuple[str, bytes, int]]]:
    """One shell line that unpacks the tar stream on stdin into temporary names and renames them into place."""
    cmds = ["set -e"]
    if missing_dirs:
        cmds.append("umask 022")
        cmds.append("mkdir -p -- " + " ".join(shlex.quote(d) for d in missing_dirs))
    members: list[tuple[str, bytes, int]] = []
    for u, _ in send:
        p = PurePosixPath(u.remote_path)
        members.append((str(p.parent / f".{p.name}.polyvm-{_secrets.token_hex(4)}"), _, u.mode))
    if members:
        cmds.append("trap " + shlex.quote("rm -f -- " + " ".join(shlex.quote(m[0]) for m in members)) + " EXIT")
        # GNU tar: -P keeps absolute member names, -p sets each file's exact mode from the stream.
        cmds.append("umask 077")
        cmds.append("tar -xpPf - --no-same-owner")
        owners: dict[str, list[str]] = {}
        for (u, _), (tmp, _, _) in zip(send, members):
            who = _owner_spec(u)
            if who:
                owners.setdefault(who, []).append(tmp)
        cmds += [f"chown -- {shlex.quote(who)} " + " ".join(shlex.quote(t) for t in tmps)
                 for who, tmps in owners.items()]
        cmds += [f"mv -f -- {shlex.quote(tmp)} {shlex.quote(u.remote_path)}" for (u, _), (tmp, _, _) in
                 zip(send, members)]
    cmds += [_meta_cmds(u, u.remote_path) for u in fix]
    return "; ".join(cmds), members


def _owner_spec(u: Upload) -> str:
    return (u.owner or "") + (f":{u.group}" if u.group else "")


def _meta_cmds(u: Upload, path: str) -> str:
    q = shlex.quote(path)
    cmds = [f"chmod {u.mode & 0o7777:o} -- {q}"]
    if _owner_spec(u):
        cmds.append(f"chown -- {shlex.quote(_owner_spec(u))} {q}")
    return "; ".join(cmds)


def _meta_matches(u: Upload, state: Sequence[str]) -> bool:
    mode, user, grp, uid, gid = state
    if int(mode, 8) != (u.mode & 0o7777):
        return False
    if u.owner and u.owner not in (user, uid):
        return False
    if u.group and u.group not in (grp, gid):
        return False
    return True


def _tail_suffix(stderr: str) -> str:
    t = tail(stderr)
    return f"; stderr tail:\n{t}" if t else ""


def _default_name(command: str, secrets: Sequence[str]) -> str:
    first = mask(command.strip(), secrets).splitlines()[0] if command.strip() else "(empty command)"
    return first if len(first) <= 80 else first[:77] + "..."


_SECRET_ENV_WORDS = ("PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PWD")


def _looks_secret_env(env: Mapping[str, str] | None, value: object) -> bool:
    """Environment values whose names say they are secret are masked even if not listed in ``secrets``."""
    return any(any(w in k.upper() for w in _SECRET_ENV_WORDS) for k, v in (env or {}).items() if v == value)
