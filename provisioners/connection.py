"""SSH connections on paramiko: typed connection arguments, waiting for a booting VM, bastions, dead-peer detection.

One :class:`Connection` is one TCP connection and one SSH handshake per host, reused for every command
(:mod:`.exec`) and copy (:mod:`.transfer`); host keys are checked by :mod:`.trust`.

A peer that stops answering is detected within ``keepalive × keepalive_count_max`` seconds (15 s by
default) of its last reply: an SSH keepalive (``keepalive@openssh.com`` with want-reply) goes out every
``keepalive`` seconds and a watchdog closes the connection when no reply came for that long; the TCP
socket also has keepalives and ``TCP_USER_TIMEOUT`` set to the same bound.

Weak algorithms (CBC and 3DES ciphers, MD5/SHA-1 MACs, SHA-1 key exchanges, DSA keys) are refused
unless ``allow_legacy_algorithms`` is set, which logs a warning for every connection that uses it.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import paramiko
import pydantic
from paramiko.common import MSG_KEXINIT, MSG_REQUEST_FAILURE, MSG_REQUEST_SUCCESS, cMSG_GLOBAL_REQUEST
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from polyvm.errors import (
    AuthenticationError,
    ConfigError,
    ConnectTimeoutError,
    HostKeyError,
    ProvisionError,
)

from . import exec as _exec
from . import transfer as _transfer
from .exec import RunResult, StdinSource, describe_error, mask
from .transfer import Upload
from .trust import (
    HostKeyPolicy,
    client_keys,
    default_known_hosts,
    parse_public_keys,
    preferred_key_types,
    verify_host_key,
)

log = logging.getLogger("polyvm.provisioners.connection")
# paramiko logs every failed handshake attempt with a traceback; while waiting for a booting VM that is
# noise. Its transports log to this channel instead, silent unless someone configures it.
_WIRE_LOG = "polyvm.provisioners.connection.wire"
logging.getLogger(_WIRE_LOG).addHandler(logging.NullHandler())
logging.getLogger(_WIRE_LOG).propagate = False

#: Algorithms refused unless ``allow_legacy_algorithms``: CBC modes and 3DES (CBC padding-oracle and
#: Sweet32 attacks), MD5 and truncated/non-ETM SHA-1 MACs, 64-bit UMAC, SHA-1 key exchanges and DSA keys
#: (OpenSSH itself disabled most of these by default in 7.x-8.x; see its release notes and ssh-audit).
LEGACY_ALGORITHMS: Mapping[str, tuple[str, ...]] = {
    "ciphers": ("3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "blowfish-cbc", "cast128-cbc"),
    "macs": ("hmac-md5", "hmac-md5-96", "hmac-sha1-96", "hmac-sha1", "umac-64@openssh.com",
             "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com", "hmac-sha1-96-etm@openssh.com",
             "umac-64-etm@openssh.com"),
    "kex": ("diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group-exchange-sha1"),
    "keys": ("ssh-dss",),
    "pubkeys": ("ssh-dss",),
}
_KEXINIT_FIELDS = {"kex": "kex_algo_list", "keys": "server_key_algo_list", "ciphers": "server_encrypt_algo_list",
                   "macs": "server_mac_algo_list"}


def backoff_delays(initial: float = 1.0, maximum: float = 20.0, factor: float = 2.0,
                   jitter: float = 0.3, rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with jitter: about 1, 2, 4, 8, 16, 20, 20, ... seconds, each varied by ±``jitter``."""
    rng = rng or random.Random()
    n = 0
    while True:
        base = min(maximum, initial * factor ** n)
        yield max(0.05, base * rng.uniform(1 - jitter, 1 + jitter))
        n += 1


# --------------------------------------------------------------------------------------------------------
# Typed connection arguments
# --------------------------------------------------------------------------------------------------------

class ConnectionArgs(BaseModel):
    """Everything needed to reach one host, validated and frozen (pulumi-command's typed connection args).

    ``private_key`` (OpenSSH/PEM text) and ``private_key_password`` are secrets: never in ``repr`` or
    errors. ``deadline`` bounds the whole wait for a host that is still booting; ``connect_timeout`` each
    attempt, with backoff from ``retry_initial`` to ``retry_max`` seconds in between. ``sudo`` (default:
    when ``user`` is not root) runs commands and copies through ``sudo -n``. ``keepalive`` seconds between
    SSH keepalives (0: off); after ``keepalive × keepalive_count_max`` seconds without a reply the host
    counts as dead. Build one from a plain mapping with :meth:`from_mapping`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=False)

    #: Mapping keys accepted besides the field names (translated by :meth:`from_mapping`).
    ALIASES: ClassVar[tuple[str, ...]] = ("insecure_accept_any_host_key",)

    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    user: str = Field("root", min_length=1)
    private_key: SecretStr | None = None
    private_key_path: Path | None = None
    private_key_password: SecretStr | None = None
    host_key: tuple[str, ...] = ()
    known_hosts: Path | None = None
    host_key_policy: HostKeyPolicy = HostKeyPolicy.PINNED_OR_TOFU
    bastion: ConnectionArgs | None = None
    connect_timeout: float = Field(10.0, gt=0)
    deadline: float = Field(300.0, gt=0)
    sudo: bool | None = None
    keepalive: float = Field(5.0, ge=0)
    keepalive_count_max: int = Field(3, ge=1)
    retry_initial: float = Field(1.0, gt=0)
    retry_max: float = Field(20.0, gt=0)
    allow_legacy_algorithms: bool = False
    secrets: tuple[str, ...] = Field((), repr=False)
    name: str | None = None

    @pydantic.field_validator("host", "user")
    @classmethod
    def _one_word(cls, v: str) -> str:
        if any(c.isspace() for c in v) or v.startswith("-"):
            raise ValueError("must be one word, not starting with '-'")
        return v

    @pydantic.field_validator("host_key", mode="before")
    @classmethod
    def _host_keys(cls, v: Any) -> tuple[str, ...]:
        if v is None or v == "":
            return ()
        items = [v] if isinstance(v, str) else list(v)
        try:
            parse_public_keys([str(i) for i in items])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return tuple(str(i) for i in items)

    @pydantic.field_validator("private_key_path", "known_hosts", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @pydantic.field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, v: Any) -> tuple[str, ...]:
        return tuple(s for s in (v or ()) if s)

    @pydantic.model_validator(mode="after")
    def _retry_range(self) -> ConnectionArgs:
        if self.retry_max < self.retry_initial:
            raise ValueError(f"retry_max ({self.retry_max:g}) must not be below retry_initial "
                             f"({self.retry_initial:g})")
        return self

    @property
    def dead_peer_timeout(self) -> float:
        """Seconds without a keepalive reply after which the host counts as dead (0: not detected)."""
        return self.keepalive * self.keepalive_count_max

    @property
    def label(self) -> str:
        port = f":{self.port}" if self.port != 22 else ""
        via = f" via {self.bastion.label}" if self.bastion is not None else ""
        return f"{self.user}@{self.host}{port}{via}"

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key a connection mapping may have (inventory entries, Pulumi ``connection`` inputs)."""
        return tuple(cls.model_fields) + cls.ALIASES

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> ConnectionArgs:
        """Validate a plain mapping (``bastion`` may be a nested mapping, which inherits the key, known_hosts
        and user of ``defaults``). Every bad field is reported, each named, in one ConfigError."""
        args, problems = _validate_mapping(data, defaults)
        if args is None:
            raise _args_error(data.get("host"), problems)
        return args


def _validate_mapping(data: Mapping[str, Any], defaults: Mapping[str, Any] | None
                      ) -> tuple[ConnectionArgs | None, list[str]]:
    merged = {**(defaults or {}), **{k: v for k, v in data.items() if v is not None}}
    problems = [f"unknown connection setting {k!r} (known: {', '.join(ConnectionArgs.keys())})"
                for k in sorted(set(merged) - set(ConnectionArgs.keys()))]
    if "host" not in merged:
        problems.insert(0, "connection setting 'host' is required")
    bastion = merged.pop("bastion", None)
    if isinstance(bastion, Mapping):
        inherit = {k: v for k, v in (defaults or {}).items() if k in ("private_key", "private_key_path",
                                                                      "known_hosts", "user")}
        bastion, bad = _validate_mapping(bastion, inherit)
        problems += [f"bastion: {p}" for p in bad]
    if bool(merged.pop("insecure_accept_any_host_key", False)):
        merged["host_key_policy"] = HostKeyPolicy.INSECURE_ACCEPT_ANY
    for k in ("private_key_path", "known_hosts"):
        if merged.get(k) is not None and not isinstance(merged[k], (str, os.PathLike)):
            problems.append(f"connection setting {k!r}: must be a path (got {type(merged[k]).__name__})")
            merged.pop(k)
    known = {k: v for k, v in merged.items() if k in ConnectionArgs.model_fields}
    try:
        # without a host, validate the rest anyway (with a stand-in) so every problem is reported at once
        args = ConnectionArgs(bastion=bastion, **{"host": "host", **known})
    except pydantic.ValidationError as exc:
        return None, problems + _problems(exc)
    return (args if not problems else None), problems


_SECRET_FIELDS = ("private_key", "private_key_password", "secrets")


def _problems(exc: pydantic.ValidationError) -> list[str]:
    out = []
    for e in exc.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "connection"
        if e["type"] == "missing":
            out.append(f"connection setting {where!r} is required")
            continue
        if e["type"] == "extra_forbidden":
            out.append(f"unknown connection setting {where!r}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # a rule across fields
            out.append(f"connection settings: {msg}")
            continue
        shown = "" if str(e["loc"][0]) in _SECRET_FIELDS else f" (got {e.get('input')!r:.60})"
        out.append(f"connection setting {where!r}: {msg}{shown}")
    return out


def _args_error(host: Any, problems: list[str]) -> ConfigError:
    where = f" for {host}" if isinstance(host, str) and host else ""
    if len(problems) == 1:
        return ConfigError(f"invalid connection settings{where}: {problems[0]}")
    return ConfigError(f"invalid connection settings{where} ({len(problems)} problems): " + "; ".join(problems))


# --------------------------------------------------------------------------------------------------------
# Results and statistics
# --------------------------------------------------------------------------------------------------------

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
    keepalives_sent: int = 0
    keepalive_replies: int = 0
    last_connect_causes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# Retry classification
# --------------------------------------------------------------------------------------------------------

_RETRYABLE_ERRNOS = {errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                     errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPIPE}


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


# --------------------------------------------------------------------------------------------------------
# Dead-peer detection
# --------------------------------------------------------------------------------------------------------

def _set_tcp_keepalive(sock: socket.socket, interval: float, count: int) -> None:
    """Kernel keepalives plus TCP_USER_TIMEOUT: data unacknowledged for ``interval × (count + 1)`` s kills the
    socket. A backstop one interval later than the SSH watchdog, whose message says more."""
    secs = max(1, int(round(interval)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", secs), ("TCP_KEEPINTVL", secs), ("TCP_KEEPCNT", count),
                       ("TCP_USER_TIMEOUT", int(interval * (count + 1) * 1000))):
        if hasattr(socket, opt):  # Linux; other systems keep what they support
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


class _Watchdog:
    """Dead-peer detection for one transport: ``keepalive@openssh.com`` (want-reply) every ``interval`` s; the
    transport is closed when no reply (success or failure: OpenSSH answers unknown requests with a failure)
    came for ``interval × count`` s.

    One process-wide thread (:data:`_WATCHDOGS`) checks every transport's deadline, so a connection costs no
    thread of its own. Sending can block for long on a dead peer (full socket buffer during a copy), so it
    happens on a per-connection sender thread, started only when the first keepalive is due (connections
    shorter than ``interval`` never start one).
    """

    def __init__(self, t: paramiko.Transport, interval: float, count: int, label: str,
                 stats: ConnectionStats) -> None:
        self.t, self.interval, self.bound, self.label, self.stats = t, interval, interval * count, label, stats
        self.count = count
        self.last_reply = time.monotonic()
        self.next_send = self.last_reply + interval
        self.dead: str | None = None
        self.stopped = False
        self._send_now = threading.Event()
        self._sender: threading.Thread | None = None
        for msg in (MSG_REQUEST_SUCCESS, MSG_REQUEST_FAILURE):
            t._handler_table[msg] = self._replied(t._handler_table[msg])

    def _replied(self, handler):  # noqa: ANN001, ANN202 - wraps a paramiko handler
        def seen(m: paramiko.Message) -> None:
            self.last_reply = time.monotonic()
            self.stats.keepalive_replies += 1
            handler(m)
        return seen

    def stop(self) -> None:
        self.stopped = True
        self._send_now.set()  # lets the sender end

    def tick(self, now: float) -> bool:
        """One check (on the shared thread); False once this watchdog is done."""
        t = self.t
        if self.stopped or not t.is_active():
            self.stop()
            return False
        silent = now - self.last_reply
        if silent > self.bound:
            self.dead = (f"the host stopped answering: no reply to SSH keepalives for {silent:.0f}s "
                         f"(one every {self.interval:g}s, dead after {self.count} missed = {self.bound:g}s)")
            log.warning("%s: %s; closing the connection", self.label, self.dead)
            self.stop()
            threading.Thread(target=t.close, daemon=True, name=f"close-{self.label}").start()
            return False
        if now >= self.next_send:
            self.next_send = now + self.interval
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                                name=f"keepalive-{self.label}")
                self._sender.start()
            self._send_now.set()
        return True

    def _send_loop(self) -> None:
        while True:
            self._send_now.wait()
            self._send_now.clear()
            if self.stopped or not self.t.is_active():
                return
            m = paramiko.Message()
            m.add_byte(cMSG_GLOBAL_REQUEST)
            m.add_string("keepalive@openssh.com")
            m.add_boolean(True)
            try:
                self.t._send_user_message(m)
                self.stats.keepalives_sent += 1
            except Exception as exc:  # noqa: BLE001 - a dying transport; the watchdog sees it
                log.debug("%s: keepalive not sent: %s", self.label, describe_error(exc))


class _Watchdogs:
    """The one thread that checks every live connection's keepalive deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[_Watchdog] = set()
        self._thread: threading.Thread | None = None

    def add(self, wd: _Watchdog) -> None:
        with self._lock:
            self._active.add(wd)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="polyvm-keepalive")
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                current = list(self._active)
                if not current:
                    self._thread = None
                    return
            for wd in current:
                try:
                    alive = wd.tick(time.monotonic())
                except Exception:  # noqa: BLE001 - one broken transport must not stop the others
                    log.debug("%s: keepalive check failed", wd.label, exc_info=True)
                    alive = False
                if not alive:
                    with self._lock:
                        self._active.discard(wd)
            time.sleep(max(0.1, min([1.0] + [wd.interval / 2 for wd in current])))


_WATCHDOGS = _Watchdogs()


# --------------------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------------------

class Connection:
    """One SSH connection to one host, opened on first use (or ``with``) and reused for every step.

    ``Connection(ConnectionArgs(...))``, ``Connection.from_mapping({...})`` or keyword arguments
    (``Connection("198.51.100.7", "admin", private_key_path=..., host_key=...)``, the fields of
    :class:`ConnectionArgs`; ``bastion`` may also be a Connection, which is then shared).
    """

    def __init__(self, host: str | ConnectionArgs, user: str | None = None, *, bastion: Connection | ConnectionArgs
                 | Mapping[str, Any] | None = None, **kw: Any) -> None:
        if isinstance(host, ConnectionArgs):
            if user is not None or kw or bastion is not None:
                raise TypeError("Connection(args) takes no other arguments")
            args = host
        else:
            if not host:
                raise ConfigError("Connection needs a host")
            fields = {"host": host, **({"user": user} if user is not None else {}), **kw}
            if isinstance(bastion, Connection):
                fields["bastion"] = bastion.args
            elif bastion is not None:
                fields["bastion"] = bastion
            try:
                args = ConnectionArgs.model_validate(fields)
            except pydantic.ValidationError as exc:
                raise _args_error(host, _problems(exc)) from None
        self.args = args
        if isinstance(bastion, Connection):
            self.bastion: Connection | None = bastion
        else:
            self.bastion = Connection(args.bastion) if args.bastion is not None else None
        self.pinned_keys = parse_public_keys(list(args.host_key))
        self.known_hosts = args.known_hosts or default_known_hosts()
        self.sudo = (args.user != "root") if args.sudo is None else bool(args.sudo)
        self.secrets: list[str] = list(args.secrets)
        self.name = args.name or self.label
        self.stats = ConnectionStats()
        self.host_key_status: str | None = None  # "pinned" | "known" | "recorded" | "accepted-insecurely"
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._transport: paramiko.Transport | None = None
        self._watchdog: _Watchdog | None = None
        self._lock = threading.RLock()
        self._holders = 0
        self._bastion_held = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Connection:
        """Build from a plain mapping (inventory entry, Pulumi inputs); see :meth:`ConnectionArgs.from_mapping`."""
        return cls(ConnectionArgs.from_mapping(data, defaults))

    # -- read-only views of the arguments ------------------------------------------------------------------
    host = property(lambda self: self.args.host)
    user = property(lambda self: self.args.user)
    port = property(lambda self: self.args.port)
    host_key_policy = property(lambda self: self.args.host_key_policy)
    connect_timeout = property(lambda self: self.args.connect_timeout)
    deadline = property(lambda self: self.args.deadline)
    private_key_path = property(lambda self: self.args.private_key_path)

    # -- pickling: never a live client ----------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in ("_transport", "_watchdog", "_lock", "_holders", "_bastion_held"):
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

    @staticmethod
    def _wrap(command: str, *, sudo: bool, env: Mapping[str, str] | None) -> str:
        return _exec.wrap_command(command, sudo=sudo, env=env)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> Connection:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Connection:
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
        if self._watchdog is not None:
            self._watchdog.stop()
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

    def connect(self) -> Connection:
        """Connect now (idempotent). Raises AuthenticationError/HostKeyError at once, ConnectTimeoutError late."""
        self._ensure()
        return self

    def lost_reason(self, t: paramiko.Transport | None = None) -> str:
        """Why transport ``t`` (default: the current one) died, for error messages."""
        wd = self._watchdog
        if wd is not None and wd.dead and (t is None or wd.t is t):
            return wd.dead
        exc = t.get_exception() if t is not None else None
        bound = self.args.dead_peer_timeout
        if isinstance(exc, (socket.timeout, TimeoutError)) or (isinstance(exc, OSError)
                                                               and exc.errno == errno.ETIMEDOUT):
            return f"the host stopped answering: TCP timeout (dead-peer bound {bound:g}s, TCP backstop " \
                   f"{bound + self.args.keepalive:g}s)"
        if exc is not None:
            return f"host went down or rebooted: {describe_error(exc)}"
        return "host went down or rebooted"

    def _connect(self) -> paramiko.Transport:
        keys = client_keys(self.args.private_key.get_secret_value() if self.args.private_key else None,
                           self.args.private_key_path, self._key_password(), label=self.label)
        if self.bastion is not None and not self._bastion_held:
            self.bastion.open()
            self._bastion_held = True
        start = time.monotonic()
        end = start + self.deadline
        a = self.args
        delays = backoff_delays(a.retry_initial, a.retry_max)
        causes: list[str] = []
        self.stats.connect_attempts = 0
        self.stats.last_connect_causes = causes
        try:
            while True:
                self.stats.connect_attempts += 1
                attempt_timeout = max(0.5, min(a.connect_timeout, end - time.monotonic()))
                try:
                    t = self._connect_once(keys, attempt_timeout)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if not _is_retryable(exc):
                        raise self._fatal(exc) from None
                    cause = mask(describe_error(exc), self.all_secrets())
                    causes.append(cause)
                    now = time.monotonic()
                    delay = next(delays)
                    if now + delay >= end:
                        tried = f"{self.stats.connect_attempts} attempt(s) over {now - start:.1f}s"
                        raise ConnectTimeoutError(
                            f"{self.label}: cannot connect within the {self.deadline:g}s deadline ({tried}, "
                            f"each with a {a.connect_timeout:g}s timeout, backoff up to {a.retry_max:g}s); "
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

    def _key_password(self) -> str | None:
        pw = self.args.private_key_password
        return pw.get_secret_value() if pw is not None else None

    def _fatal(self, exc: BaseException) -> ProvisionError:
        if isinstance(exc, ProvisionError) or isinstance(exc, ConfigError):
            return exc  # type: ignore[return-value]
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthenticationError(f"{self.label}: authentication failed for user {self.user!r} "
                                       f"({mask(describe_error(exc), self.all_secrets())}); check the user name and "
                                       "that the private key's public half is in authorized_keys")
        if isinstance(exc, paramiko.IncompatiblePeer):
            return self._incompatible(exc, {})
        return ProvisionError(f"{self.label}: {mask(describe_error(exc), self.all_secrets())}")

    def _incompatible(self, exc: paramiko.IncompatiblePeer, offered: Mapping[str, list[str]]) -> ProvisionError:
        text = describe_error(exc)
        kind = next((k for k, word in (("ciphers", "cipher"), ("macs", "mac"), ("kex", "kex"),
                                       ("keys", "host key")) if word in text), None)
        return ProvisionError(f"{self.label}: no common SSH algorithms with the server: {text}"
                              + self._weak_offer_hint(offered, kind), host=self.host)

    def _weak_offer_hint(self, offered: Mapping[str, list[str]], kind: str | None) -> str:
        """Which of the server's algorithms (of the ``kind`` that failed) were refused as legacy, and how to
        allow them."""
        if self.args.allow_legacy_algorithms or not offered:
            return ""
        refused = []
        for k, names in LEGACY_ALGORITHMS.items():
            weak = [n for n in offered.get(k, []) if n in names]
            if weak and (kind is None or k == kind):
                refused.append(f"{k} {', '.join(weak)}")
        if not refused:
            return ""
        return ("; the server offers legacy algorithms that polyvm refuses by default (" + "; ".join(refused)
                + "). Upgrade the server's sshd, or for an old host you trust pass --allow-legacy-algorithms "
                "(allow_legacy_algorithms=True)")

    def _open_socket(self, timeout: float) -> socket.socket | paramiko.Channel:
        if self.bastion is not None:
            bt = self.bastion._ensure()
            return bt.open_channel("direct-tcpip", (self.host, self.port), ("127.0.0.1", 0), timeout=timeout)
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.args.keepalive:
            _set_tcp_keepalive(sock, self.args.keepalive, self.args.keepalive_count_max)
        return sock

    def _connect_once(self, keys: list[paramiko.PKey], timeout: float) -> paramiko.Transport:
        sock = self._open_socket(timeout)
        legacy = self.args.allow_legacy_algorithms
        t = paramiko.Transport(sock, disabled_algorithms=None if legacy else dict(LEGACY_ALGORITHMS))
        t.set_log_channel(_WIRE_LOG)
        offered: dict[str, list[str]] = {}
        negotiate = t._handler_table[MSG_KEXINIT]

        def peek_kexinit(m: paramiko.Message) -> None:
            # Remember what the server offers, to say which legacy algorithms were refused.
            try:
                parsed = t._really_parse_kex_init(paramiko.Message(m.asbytes()))
                offered.update({k: list(parsed[f]) for k, f in _KEXINIT_FIELDS.items()})
            except Exception:  # noqa: BLE001 - only for the error message
                pass
            negotiate(m)

        t._handler_table[MSG_KEXINIT] = peek_kexinit
        try:
            t.banner_timeout = timeout
            t.handshake_timeout = timeout
            t.auth_timeout = max(timeout, 10.0)
            opts = t.get_security_options()
            preferred = preferred_key_types(self.pinned_keys, self.known_hosts, self.host, self.port,
                                            self.host_key_policy)
            if preferred:
                opts.key_types = preferred + [k for k in opts.key_types if k not in preferred]
            # curve25519 first: it is the cheapest key exchange paramiko offers.
            kex = list(opts.kex)
            if "curve25519-sha256@libssh.org" in kex:
                kex.remove("curve25519-sha256@libssh.org")
                kex.insert(0, "curve25519-sha256@libssh.org")
                opts.kex = kex
            try:
                t.start_client(timeout=timeout)
            except paramiko.IncompatiblePeer as exc:
                raise self._incompatible(exc, offered) from None  # never retried: it would never work
            if not (t.is_active() and t.initial_kex_done):
                raise TimeoutError("SSH handshake timed out")
            self.host_key_status = verify_host_key(
                t.get_remote_server_key(), label=self.label, host=self.host, port=self.port,
                pinned=self.pinned_keys, known_hosts=self.known_hosts, policy=self.host_key_policy)
            self._authenticate(t, keys)
            if legacy:
                self._warn_legacy(t)
            if self.args.keepalive:
                self._watchdog = _Watchdog(t, self.args.keepalive, self.args.keepalive_count_max, self.label,
                                           self.stats)
                _WATCHDOGS.add(self._watchdog)
            return t
        except BaseException:
            t.close()
            raise

    def _warn_legacy(self, t: paramiko.Transport) -> None:
        used = {"cipher": t.local_cipher, "mac": t.local_mac, "kex": getattr(t.kex_engine, "NAME", None)}
        weak = [f"{k} {v}" for k, v in used.items()
                if v and any(v in names for names in LEGACY_ALGORITHMS.values())]
        log.warning("%s: legacy SSH algorithms are allowed for this host%s", self.label,
                    f"; in use: {', '.join(weak)}" if weak else " (none negotiated)")

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
                                  f"{fps} for user {self.user!r}" + (f" ({describe_error(last)})" if last else ""))

    def all_secrets(self, extra: Iterable[str] = ()) -> list[str]:
        """Every string masked in this connection's messages: its secrets, key and key password, ``extra``."""
        base = list(self.secrets) + list(extra)
        if self.args.private_key:
            base.append(self.args.private_key.get_secret_value())
        if self.args.private_key_password:
            base.append(self.args.private_key_password.get_secret_value())
        return base

    # -- commands (exec) and copies (transfer) -------------------------------------------------------------
    def run(self, command: str, *, stdin: bytes | str | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None, sudo: bool | None = None, check: bool = True, name: str | None = None,
            secrets: Sequence[str] = ()) -> RunResult:
        """Run ``command`` through the remote shell; non-zero exit raises CommandError when ``check``.

        ``env`` values travel on stdin (never in a remote argv); ``secrets`` are masked in errors and logs;
        ``name`` is shown in errors instead of the command text.
        """
        return _exec.run(self, command, stdin=stdin, env=env, timeout=timeout, sudo=sudo, check=check, name=name,
                         secrets=secrets)

    def get_text(self, remote_path: str, *, sudo: bool | None = None) -> str | None:
        """Content of a remote text file, or None when it does not exist."""
        return _exec.get_text(self, remote_path, sudo=sudo)

    def put(self, content: bytes | str | Path, remote_path: str, *, mode: int = 0o644, owner: str | None = None,
            group: str | None = None) -> bool:
        """Copy one file atomically; False (nothing sent) when remote content, mode and owner already match."""
        return self.put_files([Upload(content, remote_path, mode, owner, group)])[0]

    def put_files(self, uploads: Sequence[Upload], *, make_dirs: Sequence[str] = ()) -> list[bool]:
        """Copy many files on one channel, skipping those that already match; see :func:`.transfer.put_files`."""
        return _transfer.put_files(self, uploads, make_dirs=make_dirs)

    def put_files_and_run(self, uploads: Sequence[Upload], *, make_dirs: Sequence[str] = (),
                          then: str | None = None, then_files: Sequence[Upload] = (),
                          env: Mapping[str, str] | None = None, timeout: float | None = None,
                          name: str | None = None, secrets: Sequence[str] = ()) -> tuple[list[bool], RunResult | None]:
        """Copy, then run ``then`` in the same channel; see :func:`.transfer.put_files_and_run`."""
        return _transfer.put_files_and_run(self, uploads, make_dirs=make_dirs, then=then, then_files=then_files,
                                           env=env, timeout=timeout, name=name, secrets=secrets)


ConnectionArgs.model_rebuild()
