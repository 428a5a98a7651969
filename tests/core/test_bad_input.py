"""Bad input to every command: one clear line, exit 2, no traceback, no hang (issue 12 item 6).

Each case runs the real CLI as a subprocess. All cases are started once per module, a few at a time
(each subprocess is mostly Python start-up), and each case is then checked on its own. Nothing here reaches
a host: targets are loopback addresses whose input is refused before any connection.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

#: A valid spec the cases break one field of.
GOOD_SPEC = {
    "name": "db1", "size": "small", "image": {"family": "debian", "version": "12"},
    "ssh": {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtIO7vB6t0eYbT7I8u0Xu9nPp1Wm7oR1GmDq8Xc9l1Z t"},
    "ingress": [{"port": 22, "cidrs": ["10.0.0.0/8"]}],
}
#: Seconds one case may take: Python start-up and plugin loading on a loaded 2-core machine, plus the
#: one refusal. A case that hangs (reads /dev/zero, waits on a FIFO, retries a host) runs into it.
BOUND = 120

HOST = ["-H", "127.0.0.1:9", "--deadline", "2"]  # never contacted: every case below fails before


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    says: str          # a fragment the one error line must contain (case-insensitive)
    code: int = 2


def _cases() -> list[Case]:
    c: list[Case] = []

    def add(id: str, *argv: str, says: str, code: int = 2) -> None:
        c.append(Case(id, tuple(argv), says, code))

    # --- spec files: validate, plan, sandbox up, apply --spec ------------------------------------------
    for cmd, extra in (("validate", ()), ("plan", ("--backend", "local")), ("sandbox-up", ())):
        argv = ("sandbox", "up", "--state-dir", "{d}/state") if cmd == "sandbox-up" else (cmd, *extra)
        add(f"{cmd}-binary-spec", *argv, "--spec", "/bin/ls", says="binary file")
        add(f"{cmd}-dev-zero-spec", *argv, "--spec", "/dev/zero", says="not a regular file")
        add(f"{cmd}-empty-spec", *argv, "--spec", "{d}/empty.yaml", says="is empty")
        add(f"{cmd}-fifo-spec", *argv, "--spec", "{d}/fifo", says="not a regular file")
        add(f"{cmd}-dir-spec", *argv, "--spec", "{d}", says="directory")
        add(f"{cmd}-missing-spec", *argv, "--spec", "{d}/nope.yaml", says="does not exist")
        add(f"{cmd}-latin1-spec", *argv, "--spec", "{d}/latin1.yaml", says="not UTF-8")
    add("validate-comments-only-spec", "validate", "--spec", "{d}/comments.yaml", says="is empty")
    add("validate-nul-spec", "validate", "--spec", "{d}/nul.yaml", says="binary")
    add("validate-huge-spec", "validate", "--spec", "{d}/huge.yaml", says="too large")
    add("validate-long-description", "validate", "--spec", "{d}/longdesc.yaml", says="at most 255 characters")
    add("validate-200k-ingress-rules", "validate", "--spec", "{d}/rules200k.yaml", says="more than 200000 values")
    add("validate-1500-ingress-rules", "validate", "--spec", "{d}/rules1500.yaml", says="at most 1000")
    add("validate-alias-bomb", "validate", "--spec", "{d}/bomb.yaml", says="values")
    add("validate-deep-nesting", "validate", "--spec", "{d}/deep.yaml", says="nested too deeply")
    add("validate-not-yaml", "validate", "--spec", "{d}/notyaml.yaml", says="not valid YAML")
    add("validate-list-spec", "validate", "--spec", "{d}/list.yaml", says="expected a mapping")
    add("validate-wrong-types", "validate", "--spec", "{d}/types.yaml", says="invalid VM spec")
    add("validate-unknown-backend", "validate", "--spec", "{d}/good.yaml", "--backend", "nosuch",
        says="unknown backend")
    add("plan-unknown-backend", "plan", "--backend", "nosuch", "--spec", "{d}/good.yaml", says="unknown backend")
    add("plan-binary-settings", "plan", "--backend", "local", "--spec", "{d}/good.yaml", "--settings", "/bin/ls",
        says="binary file")
    add("plan-dev-zero-against", "plan", "--backend", "local", "--spec", "{d}/good.yaml", "--against",
        "/dev/zero", says="not a regular file")
    add("backends-unknown-option", "backends", "--nosuch", says="no such option")

    # --- hosts and inventories: exec, copy, apply, postgres, nginx --------------------------------------
    for target, says in (("user@", "bad host"), (":22", "bad host"), ("[::1", "missing ']'"),
                         ("h:abc", "bad port"), ("h:0", "1-65535"), ("h:70000", "1-65535"), ("", "empty host"),
                         ("a b", "one word"), ("@h", "empty user"), ("[::1]x", "expected [address]:port")):
        add(f"exec-target-{target or 'empty'}", "exec", "-H", target, "--deadline", "2", "true", says=says)
    add("exec-jump-user-only", "exec", *HOST, "-J", "user@", "true", says="bad host")
    for name, says in (("inv-port-abc.yaml", "port"), ("inv-port-string.yaml", "bad port"),
                       ("inv-empty.yaml", "inventory"), ("inv-list.yaml", "must be a mapping"),
                       ("inv-nohost.yaml", "has no 'host'")):
        add(f"exec-{name[:-5]}", "exec", "-i", f"{{d}}/{name}", "--deadline", "2", "true", says=says)
    add("exec-inventory-binary", "exec", "-i", "/bin/ls", "true", says="binary file")
    add("exec-inventory-dev-zero", "exec", "-i", "/dev/zero", "true", says="not a regular file")
    add("exec-inventory-fifo", "exec", "-i", "{d}/fifo", "true", says="not a regular file")
    add("exec-inventory-dir", "exec", "-i", "{d}", "true", says="directory")
    add("exec-parallel-0", "exec", *HOST, "--parallel", "0", "true", says="parallel")
    add("exec-timeout-negative", "exec", *HOST, "--timeout", "-1", "true", says="--timeout")
    add("exec-timeout-zero", "exec", *HOST, "--timeout", "0", "true", says="--timeout")
    add("exec-deadline-negative", "exec", "-H", "127.0.0.1:9", "--deadline", "-1", "true", says="deadline")
    add("exec-known-hosts-missing-dir", "exec", *HOST, "--known-hosts", "/nonexistent/dir/kh", "true",
        says="does not exist")
    add("exec-known-hosts-dir", "exec", *HOST, "--known-hosts", "{d}", "true", says="directory")
    add("exec-private-key-dev-zero", "exec", *HOST, "-k", "/dev/zero", "true", says="not a regular file")
    add("exec-private-key-binary", "exec", *HOST, "-k", "/bin/ls", "true", says="binary file")
    add("exec-stdin-file-dev-zero", "exec", *HOST, "--stdin-file", "/dev/zero", "true", says="larger than 64 MiB")
    add("exec-private-key-not-a-key", "exec", *HOST, "-k", "{d}/good.yaml", "true", says="not a private key")
    add("exec-no-command", "exec", *HOST, says="missing argument")
    add("exec-no-hosts", "exec", "true", says="no hosts")
    add("copy-source-dev-zero", "copy", *HOST, "/dev/zero", "/tmp/x", says="not a regular file")
    add("copy-source-fifo", "copy", *HOST, "{d}/fifo", "/tmp/x", says="not a regular file")
    add("copy-dir-with-fifo", "copy", *HOST, "{d}/tree", "/tmp/x", says="not a regular file")
    add("copy-bad-mode", "copy", *HOST, "--mode", "abc", "{d}/good.yaml", "/tmp/x", says="octal")
    add("copy-mode-too-big", "copy", *HOST, "--mode", "77777", "{d}/good.yaml", "/tmp/x", says="mode")
    add("apply-unknown-recipe", "apply", *HOST, "--recipe", "nosuch", says="unknown recipe")
    add("apply-bad-inputs", "apply", *HOST, "--recipe", "postgres", "--inputs", "{d}/bad-inputs.yaml",
        says="invalid postgres recipe inputs")
    add("apply-inputs-binary", "apply", *HOST, "--recipe", "postgres", "--inputs", "/bin/ls", says="binary file")
    add("apply-set-no-equals", "apply", *HOST, "--recipe", "nginx", "--set", "port", says="NAME=VALUE")
    add("apply-secrets-file-impossible", "apply", *HOST, "--recipe", "postgres", "--set",
        "allowed_cidrs=[10.0.0.0/8]", "--set", "users=[{name: app}]", "--secrets-file", "/dev/null/s.json", says="not a directory")
    add("apply-disk-without-spec", "apply", *HOST, "--disk", "data=/dev/vdb", says="need --spec")
    add("apply-spec-dev-zero", "apply", *HOST, "--spec", "/dev/zero", says="not a regular file")
    add("new-non-empty-dir", "new", "{d}", "--backend", "aws", says="not empty")
    add("new-unknown-backend", "new", "{d}/newproj", "--backend", "nosuch", says="unknown backend")
    add("verify-unknown-recipe", "verify", *HOST, "--recipe", "nosuch", says="unknown recipe")
    add("verify-recipe-without-drift-check", "verify", *HOST, "--recipe", "nginx", says="has no drift check")
    add("verify-inputs-binary", "verify", *HOST, "--recipe", "postgres", "--inputs", "/bin/ls", says="binary file")
    add("postgres-password-file-impossible", "postgres", *HOST, "--allow", "10.0.0.0/8", "--password-file", "/dev/null/pw.json",
        says="not a directory")
    add("postgres-password-file-missing-dirs", "postgres", *HOST, "--allow", "10.0.0.0/8", "--password-file", "/nonexistent/a/pw.json",
        says="does not exist")
    add("postgres-port-zero", "postgres", *HOST, "--port", "0", says="port")
    add("postgres-port-abc", "postgres", *HOST, "--port", "abc", says="port")
    add("postgres-memory-negative", "postgres", *HOST, "--memory-mb", "-5", says="memory")
    add("postgres-allow-not-cidr", "postgres", *HOST, "--allow", "300.0.0.0/8", says="CIDR")
    add("nginx-https-port-zero", "nginx", *HOST, "--https-port", "0", says="port")
    add("nginx-upstream-bad", "nginx", *HOST, "--upstream", "no-port", says="upstream")

    # --- sandbox ----------------------------------------------------------------------------------------
    add("sandbox-up-state-dir-impossible", "sandbox", "up", "--state-dir", "/dev/null/state",
        says="not one")
    add("sandbox-status-state-dir-impossible", "sandbox", "status", "--state-dir", "/dev/null/state",
        says="not one")
    add("sandbox-up-unknown-recipe", "sandbox", "up", "--state-dir", "{d}/state", "--recipe", "nosuch",
        says="unknown recipe")
    add("sandbox-up-count-0", "sandbox", "up", "--state-dir", "{d}/state", "--count", "0", says="count")
    add("sandbox-up-bad-inputs", "sandbox", "up", "--state-dir", "{d}/state", "--inputs", "{d}/bad-inputs.yaml",
        says="invalid postgres recipe inputs")
    add("sandbox-up-inputs-not-mapping", "sandbox", "up", "--state-dir", "{d}/state", "--inputs",
        "{d}/list.yaml", says="expected a mapping")
    add("sandbox-up-inputs-without-recipe", "sandbox", "up", "--state-dir", "{d}/state", "--recipe", "none",
        "--inputs", "{d}/inputs-ok.yaml", says="need a recipe")
    add("sandbox-ssh-unknown-vm", "sandbox", "ssh", "nosuch", "--state-dir", "{d}/state", says="no sandbox VM")
    add("sandbox-down-unknown-vm", "sandbox", "down", "nosuch", "--state-dir", "{d}/state-down",
        says="no sandbox VM")
    add("recipes-unknown-option", "recipes", "--nosuch", says="no such option")
    add("unknown-command", "nosuch", says="no such command")
    return c


CASES = _cases()


def _write_files(d: Path) -> None:
    (d / "good.yaml").write_text(yaml.safe_dump(GOOD_SPEC))
    (d / "empty.yaml").write_text("")
    (d / "comments.yaml").write_text("# nothing here yet\n\n")
    (d / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (d / "nul.yaml").write_bytes(b"name: a\0b\n")
    with open(d / "huge.yaml", "w") as f:  # 5 MiB of valid YAML, over the 4 MiB cap
        f.write("name: db1\ndescription: '" + "x" * (5 * 1024 * 1024) + "'\n")
    rule = {"port": 443, "cidrs": ["10.0.0.0/8"], "description": "d" * 100_000}
    (d / "longdesc.yaml").write_text(yaml.safe_dump({**GOOD_SPEC, "ingress": [rule]}))
    (d / "rules200k.yaml").write_text(  # 200,000 rules in 1.2 MB thanks to an alias
        "rule: &r {port: 443, cidrs: [10.0.0.0/8]}\n" + yaml.safe_dump({k: v for k, v in GOOD_SPEC.items()
                                                                        if k != "ingress"})
        + "ingress:\n" + "- *r\n" * 200_000)
    (d / "rules1500.yaml").write_text(yaml.safe_dump(
        {**GOOD_SPEC, "ingress": [{"port": 1000 + i, "cidrs": ["10.0.0.0/8"]} for i in range(1500)]}))
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        bomb.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    (d / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    (d / "deep.yaml").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    (d / "notyaml.yaml").write_text("name: [unclosed\n")
    (d / "list.yaml").write_text("- a\n- b\n")
    (d / "types.yaml").write_text(yaml.safe_dump({**GOOD_SPEC, "name": [1, 2], "root_disk_gb": -1,
                                                  "size": {"cpus": "many", "memory_gb": 0}}))
    (d / "inv-port-abc.yaml").write_text("hosts:\n  - {host: 127.0.0.1, port: abc}\n")
    (d / "inv-port-string.yaml").write_text("hosts:\n  - 127.0.0.1:abc\n")
    (d / "inv-empty.yaml").write_text("")
    (d / "inv-list.yaml").write_text("- 127.0.0.1\n")
    (d / "inv-nohost.yaml").write_text("hosts:\n  - {user: admin}\n")
    (d / "bad-inputs.yaml").write_text("users: [{name: 'Bad Name!'}]\nport: 99999\n")
    (d / "inputs-ok.yaml").write_text("port: 5433\n")
    os.mkfifo(d / "fifo")
    (d / "tree" / "sub").mkdir(parents=True)
    (d / "tree" / "a.txt").write_text("a\n")
    os.mkfifo(d / "tree" / "sub" / "pipe")


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def outcomes(case_dir: Path) -> dict[str, Outcome]:
    d = case_dir
    _write_files(d)
    env = {**os.environ, "POLYVM_KNOWN_HOSTS": str(d / "known_hosts"), "COLUMNS": "200"}

    def run(case: Case) -> tuple[str, Outcome]:
        argv = [a.replace("{d}", str(d)) for a in case.argv]
        try:
            r = subprocess.run([sys.executable, "-m", "polyvm.cli", *argv], capture_output=True, text=True,
                               timeout=BOUND, env=env, stdin=subprocess.DEVNULL, cwd=d)
            return case.id, Outcome(r.returncode, r.stdout, r.stderr)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            return case.id, Outcome(None, "", err)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, CASES))


_ALLOWED_LINE = re.compile(r"^(polyvm: error: |  - |polyvm: warning: |Usage: |Try '|Error: |\s*$)")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_exit_2_no_traceback(case: Case, outcomes: dict[str, Outcome]):
    out = outcomes[case.id]
    assert out.returncode is not None, f"{case.argv} did not finish within {BOUND}s (hang): {out.stderr[-500:]}"
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.returncode == case.code, (out.returncode, out.stderr[-1000:])
    lines = out.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("polyvm: error: ")]
    usage = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) + len(usage) == 1, out.stderr
    assert all(_ALLOWED_LINE.match(ln) for ln in lines), out.stderr
    message = (errors or usage)[0]
    # The message is the error line plus, for a spec or inputs error, its listed problems.
    detail = " ".join([message] + [ln for ln in lines if ln.startswith("  - ")])
    assert case.says.lower() in detail.lower(), out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="polyvm sandbox needs root")
def test_bad_sandbox_input_leaves_no_host(outcomes: dict[str, Outcome], case_dir: Path):
    """`sandbox up` with bad inputs (or any bad input above) refused before any host was made."""
    from polyvm.backends.local import engine

    assert outcomes["sandbox-up-bad-inputs"].returncode == 2
    made = [h.id for h in engine.Engine(case_dir / "state").list()]
    for h in engine.Engine(case_dir / "state").list():  # never leave one behind, even when this fails
        engine.Engine(case_dir / "state").down(h)
    assert made == [], f"bad input left hosts behind: {made}"


def test_the_table_covers_every_command():
    """Every command `polyvm --help` lists has at least one bad-input case here."""
    from polyvm.cli import build_cli

    cli = build_cli()
    covered = {c.argv[0] for c in CASES}
    missing = sorted(set(cli.commands) - covered)
    assert not missing, f"commands without a bad-input case: {missing}"


def test_size_limits_hold_for_specs_not_from_files():
    """Pulumi config reaches parse_spec without a file: the model's own limits refuse huge input."""
    from polyvm.errors import SpecError
    from polyvm.spec import MAX_INGRESS_RULES, parse_spec

    rules = [{"port": 443, "cidrs": ["10.0.0.0/8"]}] * 200_000
    with pytest.raises(SpecError) as info:
        parse_spec({**GOOD_SPEC, "ingress": rules})
    assert info.value.problems == [f"ingress: 200000 ingress rules; at most {MAX_INGRESS_RULES}"]
    with pytest.raises(SpecError) as info:
        parse_spec({**GOOD_SPEC, "ingress": [{"port": 443, "cidrs": ["10.0.0.0/8"], "description": "x" * 60_000_000}]})
    assert info.value.problems == ["ingress[0].description: String should have at most 255 characters"]
    with pytest.raises(SpecError) as info:
        parse_spec({**GOOD_SPEC, "tags": {"k": "v" * 1000}, "region": "r" * 1000})
    assert len(info.value.problems) == 2
    parse_spec({**GOOD_SPEC, "ingress": [{"port": 443, "cidrs": ["10.0.0.0/8"]}] * MAX_INGRESS_RULES})


@pytest.mark.parametrize("where", ["start-up", "command"])
def test_ctrl_c_is_one_line_and_exit_130(where, monkeypatch, capsys):
    """Ctrl-C while plugins load (start-up) or while a command runs: "polyvm: interrupted", exit 130."""
    import click

    from polyvm import cli

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    if where == "start-up":
        monkeypatch.setattr(cli, "build_cli", interrupt)
    else:
        real = cli.build_cli

        def with_slow_command():
            group = real()
            group.add_command(click.Command("slow", callback=interrupt))
            return group

        monkeypatch.setattr(cli, "build_cli", with_slow_command)
    assert cli.main(["slow"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["polyvm: interrupted"] and "Traceback" not in err and "Aborted" not in err
