"""The SSH layer's pure parts: masking, backoff, env encoding, keys, known_hosts, retry classification."""

from __future__ import annotations

import errno
import pickle
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from polyvm.errors import AuthenticationError, ConfigError, ConnectTimeoutError, HostKeyError
from polyvm.provisioners import Connection, HostKeyPolicy, KnownHosts, backoff_delays, fingerprint, mask
from polyvm.provisioners import ConnectionArgs, encode_env, tail
from polyvm.provisioners.connection import LEGACY_ALGORITHMS, _is_retryable
from polyvm.provisioners.trust import load_private_key, parse_public_keys, preferred_key_types


def openssh_private(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def openssh_public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def test_mask_replaces_longest_secret_first_and_ignores_empty():
    assert mask("pw=abc123 and abc", ["abc", "abc123", "", None]) == "pw=******** and ********"
    assert mask("nothing", []) == "nothing"


def test_tail_keeps_last_lines():
    text = "\n".join(f"l{i}" for i in range(100)) + "\n\n"
    assert tail(text, lines=3) == "l97\nl98\nl99"
    assert len(tail("x" * 5000, chars=100)) == 100


def test_backoff_grows_from_about_one_second_to_twenty_with_jitter():
    gen = backoff_delays(rng=random.Random(1))
    delays = [next(gen) for _ in range(10)]
    assert 0.7 <= delays[0] <= 1.3 and 1.4 <= delays[1] <= 2.6 and 2.8 <= delays[2] <= 5.2
    assert all(14 <= d <= 26 for d in delays[6:])
    other = backoff_delays(rng=random.Random(2))
    assert [next(other) for _ in range(10)] != delays  # jitter: hosts do not retry in lockstep


@pytest.mark.parametrize("value", ["plain", "it's \"quoted\" $HOME `x` \\ ;", "two\nlines\n", "", "é ünïcode"])
def test_env_line_round_trips_through_sh(value):
    line = encode_env({"A_1": value, "B": "x"})
    assert "\n" not in line
    out = subprocess.run(["sh", "-c", 'IFS= read -r l; eval "$l"; printf "%s|%s" "$A_1" "$B"'],
                         input=(line + "\n").encode(), capture_output=True, check=True).stdout.decode()
    assert out == f"{value}|x"


@pytest.mark.parametrize("name", ["1A", "A-B", "", "A B", "A;rm"])
def test_env_rejects_bad_names(name):
    with pytest.raises(ValueError):
        encode_env({name: "x"})


def test_parse_public_keys_and_fingerprint(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    pub = openssh_public(key)
    typ, blob = pub.split()
    assert parse_public_keys(pub + " comment") == [(typ, blob)]
    assert parse_public_keys(f"198.51.100.1 {pub}\n# c\n") == [(typ, blob)]
    assert parse_public_keys([pub, pub]) == [(typ, blob)] * 2
    assert parse_public_keys(None) == []
    with pytest.raises(ConfigError, match="not an SSH public key"):
        parse_public_keys("hello world")
    ecdsa_blob = openssh_public(ec.generate_private_key(ec.SECP256R1())).split()[1]
    with pytest.raises(ConfigError, match="damaged"):
        parse_public_keys(f"ssh-ed25519 {ecdsa_blob}")
    (tmp_path / "k.pub").write_text(pub + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fingerprint(blob)


@pytest.mark.parametrize("make", [ed25519.Ed25519PrivateKey.generate,
                                  lambda: ec.generate_private_key(ec.SECP256R1()),
                                  lambda: rsa.generate_private_key(65537, 2048)])
def test_load_private_key_types(make):
    k = make()
    loaded = load_private_key(openssh_private(k))
    assert loaded.get_base64() == openssh_public(k).split()[1]
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode()
    assert load_private_key(pem).get_base64() == loaded.get_base64()


def test_bad_private_key_error_never_echoes_it():
    bogus = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(ConfigError) as ei:
        load_private_key(bogus)
    assert "c2VjcmV0" not in str(ei.value)
    c = Connection("127.0.0.1", private_key=bogus, known_hosts="/nonexistent/kh")
    with pytest.raises(ConfigError) as ei:
        c.connect()
    assert "c2VjcmV0" not in str(ei.value) and c.stats.connect_attempts == 0  # no traffic for config errors


def test_known_hosts_records_once_under_concurrency_and_refuses_changes(tmp_path):
    kh = KnownHosts(tmp_path / "d" / "known_hosts")
    blob = openssh_public(ed25519.Ed25519PrivateKey.generate()).split()[1]
    results = []
    threads = [threading.Thread(target=lambda: results.append(kh.check_or_record("h1", "ssh-ed25519", blob,
                                                                                   record=True)))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["known"] * 19 + ["recorded"]
    assert kh.path.read_text() == f"h1 ssh-ed25519 {blob}\n"
    assert oct(kh.path.stat().st_mode & 0o777) == "0o600" and oct(kh.path.parent.stat().st_mode & 0o777) == "0o700"
    other = openssh_public(ed25519.Ed25519PrivateKey.generate()).split()[1]
    with pytest.raises(HostKeyError, match="CHANGED"):
        kh.check_or_record("h1", "ssh-ed25519", other, record=True)
    with pytest.raises(HostKeyError, match="not in"):
        kh.check_or_record("h2", "ssh-ed25519", other, record=False)
    # entries hashed by ssh-keygen -H are found too
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh.path)], capture_output=True, check=True)
    # (The host field is hashed: no line names h1 in clear. Not a substring test: the random base64 of a hashed
    # entry contains "h1" about once in 70 runs — a fresh-clone run failed on exactly that.)
    hosts = [line.split()[0] for line in kh.path.read_text().splitlines() if line.strip()]
    assert hosts and all(h.startswith("|1|") for h in hosts), hosts
    assert kh.lookup("h1") == {"ssh-ed25519": blob}


def test_connection_repr_pickle_and_settings():
    key = openssh_private(ed25519.Ed25519PrivateKey.generate())
    bastion = Connection("192.0.2.1", "jump", private_key=key)
    c = Connection("192.0.2.5", "admin", port=2222, private_key=key, bastion=bastion, known_hosts="/tmp/kh")
    assert c.sudo is True and Connection("192.0.2.5").sudo is False
    assert repr(c) == "Connection('admin@192.0.2.5:2222 via jump@192.0.2.1')"
    assert key not in repr(c)
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.label == c.label and not c2.connected and c2.bastion.label == bastion.label
    with pytest.raises(ConfigError, match="unknown connection setting"):
        Connection.from_mapping({"host": "x", "pasword": "y"})
    with pytest.raises(ConfigError, match="'host' is required"):
        Connection.from_mapping({"user": "x"})
    m = Connection.from_mapping({"host": "h", "port": 2200.0 if False else 2200, "bastion": {"host": "b"},
                                 "insecure_accept_any_host_key": True},
                                {"user": "admin", "private_key_path": "/k"})
    assert m.host_key_policy is HostKeyPolicy.INSECURE_ACCEPT_ANY and m.bastion.user == "admin"
    assert str(m.bastion.private_key_path) == "/k"


def test_retry_classification():
    assert _is_retryable(ConnectionRefusedError())
    assert _is_retryable(socket.timeout())
    assert _is_retryable(OSError(errno.EHOSTUNREACH, "no route"))
    assert _is_retryable(EOFError())
    assert _is_retryable(paramiko.SSHException("Error reading SSH protocol banner"))
    assert _is_retryable(paramiko.ChannelException(2, "Connect failed"))
    assert not _is_retryable(paramiko.AuthenticationException("denied"))
    assert not _is_retryable(paramiko.BadAuthenticationType("x", ["password"]))
    assert not _is_retryable(HostKeyError("changed"))
    assert not _is_retryable(AuthenticationError("x"))
    assert not _is_retryable(paramiko.IncompatiblePeer("no kex"))


def test_refused_port_is_polled_about_once_a_second_up_to_the_deadline(tmp_path):
    """A refused connection costs one round trip: with the default backoff (1, 2, 4 s ...) a host whose sshd
    starts late was found up to 18 s late; now refused attempts come about once a second and a last one is
    made at the deadline (the old code gave up at 3 attempts within 5 s, before the deadline)."""
    key = openssh_private(ed25519.Ed25519PrivateKey.generate())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # 8 s: about 8 attempts; 5 leave 3 s for a loaded machine's late wake-ups (the old backoff made 3-4).
    c = Connection("127.0.0.1", port=port, private_key=key, known_hosts=tmp_path / "kh", deadline=8)
    t0 = time.monotonic()
    with pytest.raises(ConnectTimeoutError):
        c.connect()
    assert c.stats.connect_attempts >= 5, c.stats.connect_attempts
    assert time.monotonic() - t0 >= 7.9  # the last attempt is at the deadline, not one backoff before it


def test_fast_retry_only_for_answers_that_come_at_once():
    import errno as _errno

    from polyvm.provisioners.connection import _answered_at_once, _fast_retry_delay

    assert _answered_at_once(ConnectionRefusedError(_errno.ECONNREFUSED, "refused"))
    assert _answered_at_once(OSError(_errno.EHOSTUNREACH, "no route"))
    assert _answered_at_once(paramiko.ChannelException(2, "Connect failed"))  # refused behind a bastion
    assert not _answered_at_once(socket.timeout("timed out"))
    assert not _answered_at_once(paramiko.ChannelException(1, "prohibited"))
    assert all(0.05 <= _fast_retry_delay(d) <= 1.0 for d in (0.1, 1.0, 30.0))


def test_refused_port_is_retried_until_the_deadline_then_explained(tmp_path):
    key = openssh_private(ed25519.Ed25519PrivateKey.generate())
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Three attempts need about 0.2 s of backoff; the 6 s deadline leaves a loaded machine ample room.
    c = Connection("127.0.0.1", port=port, private_key=key, known_hosts=tmp_path / "kh", deadline=6,
                   retry_initial=0.05, retry_max=0.1)
    with pytest.raises(ConnectTimeoutError) as ei:
        c.connect()
    msg = str(ei.value)
    assert f"root@127.0.0.1:{port}: cannot connect within the 6s deadline" in msg
    assert "attempt(s) over" in msg and msg.endswith("last error: connection refused")
    assert c.stats.connect_attempts >= 3 and c.stats.retries == c.stats.connect_attempts - 1
    assert set(c.stats.last_connect_causes) == {"connection refused"}


def test_pinned_key_type_is_negotiated_first(tmp_path):
    rsa_pub = openssh_public(rsa.generate_private_key(65537, 2048))
    ec_pub = openssh_public(ec.generate_private_key(ec.SECP256R1()))
    def preferred(c: Connection) -> list[str]:
        return preferred_key_types(c.pinned_keys, c.known_hosts, c.host, c.port, c.host_key_policy)

    c = Connection("192.0.2.9", host_key=[rsa_pub, ec_pub], known_hosts=tmp_path / "kh")
    assert preferred(c) == ["rsa-sha2-512", "rsa-sha2-256", "ecdsa-sha2-nistp256"]
    # without a pin, the type already recorded for the host is preferred
    (tmp_path / "kh").write_text(f"[192.0.2.9]:2222 {ec_pub}\n")
    assert preferred(Connection("192.0.2.9", port=2222, known_hosts=tmp_path / "kh")) == ["ecdsa-sha2-nistp256"]
    assert preferred(Connection("192.0.2.9", known_hosts=tmp_path / "kh")) == []


# --------------------------------------------------------------------------------------------------------
# ConnectionArgs: typed, validated, frozen; one list of keys
# --------------------------------------------------------------------------------------------------------

def test_connection_args_report_every_bad_field_once_without_secrets():
    secret_key = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n"
    with pytest.raises(ConfigError) as ei:
        ConnectionArgs.from_mapping({"host": "h1", "port": 70000, "connect_timeout": -1, "keepalive": "often",
                                     "private_key": ["not", "text"], "host_key": "garbage here"})
    msg = str(ei.value)
    assert msg.startswith("invalid connection settings for h1 (5 problems): ")
    for field in ("'port'", "'connect_timeout'", "'keepalive'", "'private_key'", "'host_key'"):
        assert msg.count(field) == 1, (field, msg)
    assert "70000" in msg and "not an SSH public key" in msg and "'not'" not in msg
    with pytest.raises(ConfigError) as ei:
        ConnectionArgs.from_mapping({"host": "h", "private_key": 12345678})
    assert "12345678" not in str(ei.value)  # a secret field's value is never echoed
    with pytest.raises(ConfigError, match="bastion: connection setting 'port'"):
        ConnectionArgs.from_mapping({"host": "h", "bastion": {"host": "b", "port": 0}})
    with pytest.raises(ConfigError, match="retry_max .1. must not be below retry_initial .5."):
        ConnectionArgs.from_mapping({"host": "h", "retry_initial": 5, "retry_max": 1})
    with pytest.raises(ConfigError, match="'host': must be one word"):
        ConnectionArgs.from_mapping({"host": "-oProxyCommand=x"})
    assert "secret" not in repr(ConnectionArgs(host="h", private_key=secret_key, secrets=("s3cr3t",)))


def test_connection_args_are_frozen_and_build_connections_both_ways(tmp_path):
    key = openssh_private(ed25519.Ed25519PrivateKey.generate())
    args = ConnectionArgs.from_mapping({"host": "192.0.2.5", "user": "admin", "port": 2222,
                                        "private_key": key, "known_hosts": str(tmp_path / "kh"),
                                        "keepalive": 2, "keepalive_count_max": 4})
    with pytest.raises(pydantic.ValidationError):
        args.port = 22  # type: ignore[misc]
    assert args.dead_peer_timeout == 8 and args.private_key.get_secret_value() == key
    by_args = Connection(args)
    by_kw = Connection("192.0.2.5", "admin", port=2222, private_key=key, known_hosts=tmp_path / "kh",
                       keepalive=2, keepalive_count_max=4)
    assert by_args.args == by_kw.args and by_args.label == "admin@192.0.2.5:2222"
    with pytest.raises(TypeError):
        Connection(args, "root")
    with pytest.raises(ConfigError, match="'port'"):
        Connection("192.0.2.5", port="ssh")
    assert ConnectionArgs(host="h").dead_peer_timeout == 15  # the documented default bound: 5 s × 3


def test_one_list_of_connection_keys_for_inventories_and_pulumi():
    from polyvm.provisioners import pulumi as provisioner_pulumi

    assert provisioner_pulumi._CONNECTION_KEYS == ConnectionArgs.keys()
    assert set(ConnectionArgs.keys()) >= {"host", "port", "user", "private_key", "private_key_path",
                                          "private_key_password", "host_key", "known_hosts", "bastion",
                                          "connect_timeout", "deadline", "sudo", "keepalive", "retry_initial",
                                          "retry_max", "insecure_accept_any_host_key", "allow_legacy_algorithms"}
    # every key is accepted by from_mapping (no second list that can drift)
    sample = {"host": "h", "port": 22, "user": "u", "private_key": None, "private_key_path": "/k",
              "private_key_password": "pw", "host_key": None, "known_hosts": "/kh", "host_key_policy": "known_only",
              "bastion": {"host": "b"}, "connect_timeout": 5, "deadline": 10, "sudo": True, "keepalive": 3,
              "keepalive_count_max": 2, "retry_initial": 0.5, "retry_max": 2, "allow_legacy_algorithms": False, "rotate_host_key": False, "command_timeout": 60,
              "secrets": ["x"], "name": "n", "insecure_accept_any_host_key": False}
    assert set(sample) == set(ConnectionArgs.keys())
    assert ConnectionArgs.from_mapping(sample).host_key_policy is HostKeyPolicy.KNOWN_ONLY


def test_legacy_algorithms_are_not_offered_unless_allowed():
    a, b = socket.socketpair()
    try:
        strict = paramiko.Transport(a, disabled_algorithms=dict(LEGACY_ALGORITHMS))
        legacy = paramiko.Transport(b)
        weak = {n for names in LEGACY_ALGORITHMS.values() for n in names}
        offered = {*strict.preferred_ciphers, *strict.preferred_macs, *strict.preferred_kex, *strict.preferred_keys}
        assert not offered & weak
        assert {"3des-cbc", "aes128-cbc", "hmac-md5", "hmac-sha1-96"} <= {*legacy.preferred_ciphers,
                                                                          *legacy.preferred_macs}
        assert strict.preferred_ciphers and strict.preferred_macs and strict.preferred_kex
    finally:
        a.close()
        b.close()


def test_cli_bad_connection_option_is_one_line_exit_2():
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    r = CliRunner().invoke(build_cli(), ["exec", "-q", "-H", "192.0.2.1", "--deadline", "-1", "true"])
    assert r.exit_code == 2 and "'deadline'" in r.output and "Traceback" not in r.output, r.output


def test_provision_errors_declare_their_context_fields():
    from polyvm.errors import CommandError, FanoutError, ProvisionError

    e = ProvisionError("x")
    assert (e.host, e.step, e.results) == ("", None, [])
    assert e.with_context(step="s", results=[1]) is e and (e.step, e.results) == ("s", [1])
    c = CommandError("boom", host="h", command="c", exit_code=3, stderr_tail="t", copy_flags=(True, False))
    assert (c.host, c.command, c.exit_status, c.stderr_tail, c.copy_flags) == ("h", "c", 3, "t", [True, False])
    assert CommandError("boom").copy_flags is None
    f = FanoutError({"h": c}, result="r")
    assert f.result == "r" and f.failed == {"h": c}


def test_known_hosts_replace_drops_plain_and_hashed_lines_of_that_host_only(tmp_path):
    from polyvm.errors import HostKeyError as _HKE
    from polyvm.provisioners.trust import parse_rotation_output

    kh = tmp_path / "kh"
    hashed = paramiko.HostKeys.hash_host("198.51.100.7")
    kh.write_text(f"198.51.100.7 ssh-ed25519 AAAAold\n{hashed} ssh-rsa AAAAold2\n"
                  "198.51.100.8 ssh-ed25519 AAAAother\n[198.51.100.7]:2222 ssh-ed25519 AAAAport\n")
    KnownHosts(kh).replace("198.51.100.7", "ssh-ed25519", "AAAAnew")
    assert kh.read_text() == ("198.51.100.8 ssh-ed25519 AAAAother\n[198.51.100.7]:2222 ssh-ed25519 AAAAport\n"
                              "198.51.100.7 ssh-ed25519 AAAAnew\n")
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIItb6qtfyxmL/XYcDjxupRnl7V5gGAflR29Y4qUlXWcM"
    assert parse_rotation_output(f"polyvm-rotation: rotated\nssh-ed25519 {blob} host\n") == \
        (True, f"ssh-ed25519 {blob}")
    assert parse_rotation_output(f"polyvm-rotation: unchanged\nssh-ed25519 {blob}\n")[0] is False
    with pytest.raises(_HKE, match="printed no new key"):
        parse_rotation_output("something else\n")
