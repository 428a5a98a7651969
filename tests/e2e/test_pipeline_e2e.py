"""Round trips on real SSH hosts: scripts in the exec request, consecutive steps pipelined into one channel,
secrets kept out of every remote argv (issue 19). Counts exec channels (ConnectionStats), never time."""

from __future__ import annotations

import pytest

from polyvm.errors import CommandError
from polyvm.provisioners import Connection, CopyFile, RunCommand, Script, run_steps
from polyvm.provisioners.steps import FilesStep, Piece, RemoteFile, Step, StepResult, apply_steps

# Counts the processes whose argv holds the token; the bracket keeps grep's own argv from matching.
ARGV_SCAN = ("n=0; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null | "
             "grep -q -- '{head}[{mid}]{tail}' && n=$((n+1)); done; echo \"argv-hits=$n\"")


def scan(token: str) -> str:
    return ARGV_SCAN.format(head=token[:4], mid=token[4], tail=token[5:])


def conn_for(host) -> Connection:
    return Connection(host.address, host.user, private_key_path=host.private_key_path, host_key=host.host_key,
                      deadline=120)


def hits(result) -> int:
    line = [ln for ln in result.output.stdout.splitlines() if ln.startswith("argv-hits=")][0]
    return int(line.split("=")[1])


def test_script_without_secret_travels_in_the_exec_request_and_a_secret_never_does(testhosts):
    (host,) = testhosts.up()
    token = "zq7tok" + "en41x"
    secret = "zq7sec" + "ret93y"
    with conn_for(host) as c:
        plain = Script(f"# {token}\n" + scan(token), name="plain")
        assert plain.inline_command() is not None
        (r,) = run_steps(c, [plain])
        assert hits(r) >= 1  # the script is in the command line: no stdin, one round trip less
        assert c.stats.channels == 1
        hidden = Script(f"S='{secret}'\n" + scan(secret), name="with a secret", secrets=[secret])
        assert hidden.inline_command() is None
        (r,) = run_steps(c, [hidden])
        assert hits(r) == 0
        assert secret not in r.output.stdout  # masked anyway
        # A script holding one of the connection's own secrets stays on stdin too.
    with Connection(host.address, host.user, private_key_path=host.private_key_path, host_key=host.host_key,
                    secrets=[secret]) as c2:
        (r,) = run_steps(c2, [Script(f"S='{secret}'\n" + scan(secret), name="connection secret")])
        assert hits(r) == 0


def test_a_secret_step_inside_a_pipeline_sends_the_whole_program_on_stdin(testhosts):
    (host,) = testhosts.up()
    secret = "zq7pip" + "eline5w"
    steps = [Script("echo one", name="one"),
             Script(f"S='{secret}'\n" + scan(secret), name="secret", secrets=[secret]),
             RunCommand(scan(secret), name="scan again")]
    with conn_for(host) as c:
        results = [r for _, r in apply_steps(c, steps)]
        assert c.stats.channels == 1
    assert [r.name for r in results] == ["one", "secret", "scan again"]
    assert results[0].output.stdout.strip() == "one"
    assert hits(results[1]) == 0 and hits(results[2]) == 0


def test_consecutive_steps_share_one_channel_and_a_rerun_changes_nothing(testhosts, tmp_path):
    (host,) = testhosts.up()
    steps = [
        Script("[ -d /srv/pipe ] || { mkdir -p /srv/pipe && echo made; }", name="dir", changed_marker="made"),
        RunCommand("echo hello > /srv/pipe/cmd", creates="/srv/pipe/cmd", name="command"),
        FilesStep("config", [RemoteFile("/srv/pipe/a.conf", "a = 1\n", mode=0o640, owner="nobody"),
                             RemoteFile("/srv/pipe/sub/b.conf", "b = 'x'\n")]),
        Script("cat /srv/pipe/a.conf; stat -c '%a %U' /srv/pipe/a.conf", name="read back", args=["x"]),
        RunCommand("echo $GREETING", env={"GREETING": "hi there"}, name="env"),
    ]
    with conn_for(host) as c:
        first = [r for _, r in apply_steps(c, steps)]
        assert c.stats.channels == 1
    assert [r.changed for r in first] == [True, True, True, True, True]
    assert first[3].output.stdout.split("\n")[:2] == ["a = 1", "640 nobody"]
    assert first[4].output.stdout.strip() == "hi there"
    assert testhosts.exec(host, "cat /srv/pipe/sub/b.conf").stdout == "b = 'x'\n"
    with conn_for(host) as c:
        again = [r for _, r in apply_steps(c, steps)]
        assert c.stats.channels == 1
    assert [r.changed for r in again][:3] == [False, False, False]
    assert again[1].detail.startswith("skipped")
    # A file changed on the host, and one whose owner changed, are put back.
    testhosts.exec(host, "echo drift > /srv/pipe/sub/b.conf; chown root /srv/pipe/a.conf")
    with conn_for(host) as c:
        third = [r for _, r in apply_steps(c, steps)]
    assert third[2].changed and "a.conf" in third[2].detail and "b.conf" in third[2].detail
    assert testhosts.exec(host, "cat /srv/pipe/sub/b.conf; stat -c %U /srv/pipe/a.conf").stdout == "b = 'x'\nnobody\n"


def test_a_pipeline_stops_at_the_first_failure_and_says_which_step(testhosts):
    (host,) = testhosts.up()
    steps = [Script("echo fine", name="fine"),
             Script("echo broken >&2; exit 3", name="breaks"),
             RunCommand("touch /srv/never", name="never")]
    with conn_for(host) as c:
        with pytest.raises(CommandError) as info:
            list(apply_steps(c, steps))
        assert c.stats.channels == 1
    err = info.value
    assert err.step == "breaks" and err.exit_status == 3
    assert "broken" in str(err) and [r.name for r in err.results] == ["fine"]
    assert testhosts.exec(host, "test -e /srv/never", check=False).returncode == 1


def test_large_or_binary_copies_keep_the_copy_protocol(testhosts):
    (host,) = testhosts.up()
    big = "x" * (70 * 1024)
    steps = [Script("mkdir -p /srv/big", name="dir"), CopyFile(big, "/srv/big/f"),
             CopyFile(b"\x00\xff", "/srv/big/bin"), Script("wc -c < /srv/big/f", name="size")]
    with conn_for(host) as c:
        results = [r for _, r in apply_steps(c, steps)]
        # dir alone (inline), then both copies + the script in one channel of the copy protocol
        assert c.stats.channels == 2
    assert results[-1].output.stdout.strip() == str(70 * 1024)


def test_pipeline_and_inline_scripts_through_sudo(testhosts):
    (host,) = testhosts.up(user="admin")
    steps = [Script("id -u", name="who"),
             FilesStep("conf", [RemoteFile("/etc/polyvm-pipe.conf", "x = 1\n", mode=0o600)]),
             RunCommand("stat -c '%a %U' /etc/polyvm-pipe.conf", name="stat")]
    with conn_for(host) as c:
        assert c.sudo
        results = [r for _, r in apply_steps(c, steps)]
        (alone,) = run_steps(c, [Script("id -u; echo $0", name="alone")])
        assert c.stats.channels == 2
    assert results[0].output.stdout.strip() == "0" and results[1].changed
    assert results[2].output.stdout.strip() == "600 root"
    assert alone.output.stdout.split()[0] == "0"


def test_a_script_with_stdin_joins_the_pipeline_and_its_stdin_never_reaches_an_argv(testhosts):
    (host,) = testhosts.up()
    secret = "zq7std" + "inpw8k"
    steps = [Script("echo one", name="one"),
             Script('read -r line; [ "$line" = "' + secret + '" ] && echo got-it; ' + scan(secret), name="reads",
                    stdin=secret + "\n", secrets=[secret]),
             RunCommand("echo three", name="three")]
    with conn_for(host) as c:
        results = [r for _, r in apply_steps(c, steps)]
        assert c.stats.channels == 1  # was: one channel for "one", one for "reads" (stdin), one for "three"
    assert [r.name for r in results] == ["one", "reads", "three"]
    assert "got-it" in results[1].output.stdout and hits(results[1]) == 0


class TwoPart(Step):
    """Reads a value in one program, then uses it in the next (what the PostgreSQL roles step does)."""

    name = "two part"

    def __init__(self) -> None:
        self.seen: str | None = None

    def pipelined(self, conn):  # noqa: ANN001, ANN201
        if self.seen is None:
            def read(r):  # noqa: ANN001, ANN202
                self.seen = r.stdout.strip()
                return StepResult(self.name, False, "read")

            return Piece("cat /etc/hostname", f"{self.name} (read)", read, continues=True)
        value, self.seen = self.seen, None
        return Piece(f"echo 'used {value}'", self.name, lambda r: StepResult(self.name, True, r.stdout.strip()))

    def apply(self, conn):  # noqa: ANN001, ANN201 - never reached here: both parts are pipelined
        raise AssertionError("applied alone")


def test_a_step_that_continues_ends_one_program_and_starts_the_next(testhosts):
    (host,) = testhosts.up()
    steps = [Script("echo before", name="before"), TwoPart(), RunCommand("echo after", name="after")]
    with conn_for(host) as c:
        results = [r for _, r in apply_steps(c, steps)]
        assert c.stats.channels == 2
        hostname = c.run("cat /etc/hostname").stdout.strip()
    assert [r.name for r in results] == ["before", "two part", "after"]  # the read part is not reported
    assert results[1].changed and results[1].detail == f"used {hostname}"
