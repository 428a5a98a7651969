"""Run stamps (provisioners/stamp.py), the parts that need no host: what the digest covers, that it is keyed by the
secrets and never holds one, what the check and the kept state script hold. The host side: tests/e2e/test_run_stamp.py."""

from __future__ import annotations

import hashlib
import hmac
import subprocess

from polyvm.host import Facts, Host, HostDisk
from polyvm.provisioners import stamp
from polyvm.provisioners.exec import INLINE_LIMIT
from polyvm.provisioners.steps import FilesStep, RemoteFile, Script
from polyvm.recipes.postgres import PostgresRecipe, parse_inputs

PW = "digest-test-password-8e1f"
BASE = {"allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app", "password": PW}], "databases": [{"name": "app"}]}
HOST = Host(address="198.18.0.9", user="admin", host_key="ssh-ed25519 AAAAone")
FACTS = Facts("debian", "12", "Debian GNU/Linux 12", 2048)


def digest(data=None, host=HOST) -> str:
    return stamp.run_digest(PostgresRecipe(), parse_inputs({**BASE, **(data or {})}), host)


def test_the_digest_follows_the_inputs_the_secrets_and_the_host_but_not_its_host_key():
    d = digest()
    assert d == digest()
    assert digest({"settings": {"work_mem": "8MB"}}) != d
    assert digest({"users": [{"name": "app", "password": PW + "x"}]}) != d  # a SecretStr dumps as ****: revealed
    assert digest(host=Host(address="198.18.0.10", user="admin")) != d
    assert digest(host=Host(address="198.18.0.9", user="admin", disks=(HostDisk("d", "/dev/vdb", "/srv"),))) != d
    assert digest(host=Host(address="198.18.0.9", user="admin", host_key="ssh-ed25519 AAAAtwo")) == d  # rotation


def test_the_digest_follows_the_code(monkeypatch):
    d = digest()
    monkeypatch.setattr(stamp, "code_digest", lambda recipe: "another polyvm")
    assert digest() != d


def test_the_digest_is_keyed_by_the_secrets_and_holds_none():
    """Without the password, nobody can compute it (nor test a guess faster than against the server's SCRAM
    verifiers, 4096 PBKDF2 rounds)."""
    d = digest()
    assert PW not in d and len(d) == 64
    assert stamp._KDF_ITERATIONS > 4096
    unkeyed = hmac.new(stamp._key(()), b"", "sha256").hexdigest()
    assert d != unkeyed and stamp._key((PW,)) != stamp._key(())
    assert stamp._key((PW,)) == hashlib.pbkdf2_hmac("sha256", PW.encode(), b"polyvm run stamp v1", stamp._KDF_ITERATIONS)


def test_the_check_goes_in_the_exec_request_and_holds_no_secret():
    cmd = stamp.check_command("postgres", digest())
    assert PW not in cmd and len(cmd) < INLINE_LIMIT



def test_any_recipe_name_gets_its_own_files_inside_the_stamp_dir():
    """A plugin may call its recipe "my.recipe" (or worse): its stamp stays in STAMP_DIR, apart from others'."""
    assert stamp._paths("postgres") == (f"{stamp.STAMP_DIR}/postgres", f"{stamp.STAMP_DIR}/postgres.state")
    odd = [stamp._paths(n) for n in ("../etc", "my.recipe", "my%2erecipe", "x.state", "x")]
    files = [f for pair in odd for f in pair]
    assert len(set(files)) == len(files)
    assert all(f.startswith(stamp.STAMP_DIR + "/") and "/" not in f[len(stamp.STAMP_DIR) + 1:] and ".." not in f
               for f in files)
    cmd = stamp.check_command("../etc", "a" * 64)
    assert "../" not in cmd
    subprocess.run(["sh", "-n"], input=cmd, text=True, check=True)


def test_the_kept_state_script_lists_the_copied_files_and_the_probes_and_no_secret():
    recipe = PostgresRecipe()
    inputs = parse_inputs(BASE)
    probe = recipe.stamp_probe(inputs, HOST, FACTS)
    assert probe and PW not in probe
    steps = [FilesStep("conf", [RemoteFile("/etc/a.conf", "x"), RemoteFile("/etc/b b.conf", "y")]),
             Script("echo", name="s"), FilesStep("again", [RemoteFile("/etc/a.conf", "x")])]
    assert stamp.copied_paths(steps) == ["/etc/a.conf", "/etc/b b.conf"]
    script = stamp.state_script(stamp.copied_paths(steps), [probe, ""])
    assert "f /etc/a.conf\n" in script and "f '/etc/b b.conf'\n" in script and PW not in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)  # valid POSIX sh (syntax)
    subprocess.run(["sh", "-n"], input=stamp.check_command("postgres", "a" * 64), text=True, check=True)


def test_the_state_script_reports_files_and_probe_output(tmp_path):
    a = tmp_path / "a"
    a.write_text("one")
    script = stamp.state_script([str(a), str(tmp_path / "missing")], ["echo probe-ran; echo to-stderr >&2"])
    run = lambda: subprocess.run(["sh", "-s", "DIGEST"], input=script, capture_output=True, text=True).stdout  # noqa: E731
    out = run()
    assert "digest DIGEST" in out and "file " + str(a) in out and "missing" in out
    assert "probe-ran" in out and "to-stderr" in out  # errors count too
    before = out
    a.write_text("two")
    assert run() != before


def test_postgres_with_backups_or_replication_keeps_no_stamp():
    recipe = PostgresRecipe()
    assert recipe.stamp_probe(parse_inputs(BASE), HOST, FACTS) is not None
    backup = parse_inputs({**BASE, "backup": {"cipher_pass": "c" * 24, "repo": {"path": "/srv/backups"}}})
    assert recipe.stamp_probe(backup, HOST, FACTS) is None


def test_a_recipe_without_a_probe_is_never_stamped():
    from polyvm.provisioners.fanout import stamped_steps
    from polyvm.recipe import Recipe

    class Plain(Recipe):
        name = "plain"

    assert stamped_steps(HOST, None, Plain(), None) is None  # type: ignore[arg-type]  # no connection used
