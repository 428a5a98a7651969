"""Steps and fan-out logic, driven through a stand-in connection that runs commands with the local /bin/sh
(the same remote-side shell code, without SSH)."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console

from polyvm.errors import CommandError, FanoutError
from polyvm.provisioners import CopyDir, CopyFile, RunCommand, RunResult, Script, fanout, run_steps
from polyvm.provisioners import Connection, Upload
from polyvm.provisioners.steps import apply_steps


class LocalConnection(Connection):
    """Runs the wire command with the local shell instead of over SSH; records what was asked."""

    def __init__(self, name: str = "local", fail: bool = False) -> None:
        super().__init__("localhost", name=name)
        self.commands: list[str] = []
        self.puts: list[Upload] = []
        self.fail = fail
        self.opened = 0

    def open(self):
        self.opened += 1
        if self.fail:
            raise CommandError(f"{self.name}: cannot connect (test)")
        return self

    def close(self):
        pass

    def run(self, command, *, stdin=None, env=None, timeout=None, sudo=None, check=True, name=None, secrets=()):
        self.commands.append(command)
        wire = self._wrap(command, sudo=False, env=env)
        from polyvm.provisioners import encode_env

        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        if env:
            data = (encode_env(env) + "\n").encode() + data
        t0 = time.monotonic()
        p = subprocess.run(["sh", "-c", wire], input=data, capture_output=True, timeout=30)
        r = RunResult(p.returncode, p.stdout.decode(), p.stderr.decode(), time.monotonic() - t0)
        if check and r.exit_status:
            raise CommandError(f"{self.name}: {name or command!r} failed with exit code {r.exit_status}",
                               host=self.host, command=name or command, exit_code=r.exit_status,
                               stderr_tail=r.stderr)
        return r

    def put_files(self, uploads, *, make_dirs=()):
        self.puts += list(uploads)
        return [True for _ in uploads]

    def put_files_and_run(self, uploads, *, make_dirs=(), then=None, then_files=(), env=None, timeout=None,
                          name=None, secrets=()):
        """Like the real one as far as steps can tell: files land, then the command runs (here: locally)."""
        flags = self.put_files(uploads, make_dirs=make_dirs)
        for f in then_files:
            Path(f.remote_path).write_bytes(f.data())
        return flags, (self.run(then, env=env, name=name) if then is not None else None)


def test_run_command_creates_and_unless(tmp_path):
    c = LocalConnection()
    marker = tmp_path / "made"
    step = RunCommand(f"touch {marker}; echo made", creates=str(marker), name="make it")
    assert run_steps(c, [step])[0].changed
    again = run_steps(c, [step])[0]
    assert not again.changed and again.detail == f"skipped: {marker} exists"
    assert len(c.commands) == 2  # the guard runs in the same command: one channel per step
    skip = RunCommand("echo should-not-run", unless="true")
    r = skip.apply(c)
    assert not r.changed and "unless" in r.detail
    ran = RunCommand("echo ran", unless="false").apply(c)
    assert ran.changed and ran.output.stdout == "ran\n"


def test_changed_when_variants():
    c = LocalConnection()
    assert not RunCommand("echo x", changed_when="never").apply(c).changed
    assert RunCommand("echo changed", changed_when=lambda r: "changed" in r.stdout).apply(c).changed
    assert not RunCommand("echo same", changed_when=lambda r: "changed" in r.stdout).apply(c).changed
    with pytest.raises(Exception, match="changed_when"):
        RunCommand("x", changed_when="sometimes")


def test_script_runs_with_interpreter_args_stdin_env_and_marker():
    c = LocalConnection()
    s = Script('echo "args:$1 $2"; echo "env:$GREETING"; cat; echo CHANGED', changed_marker="CHANGED",
               stdin="from-stdin\n", env={"GREETING": "hi"}, args=["a b", "c"], name="s")
    r = s.apply(c)
    assert r.changed and r.output.stdout == "args:a b c\nenv:hi\nfrom-stdin\nCHANGED\n"
    r = Script("import sys; print(sys.argv[1:])", interpreter="python3", args=["x"]).apply(c)
    assert r.output.stdout == "['x']\n" and r.changed
    assert not Script("echo nothing", changed_marker="CHANGED").apply(c).changed
    # the temporary script file is removed afterwards
    r = Script('echo "$0"').apply(c)
    assert subprocess.run(["test", "-e", r.output.stdout.strip()]).returncode == 1


def test_script_failure_raises_with_name():
    with pytest.raises(CommandError, match="'setup' failed with exit code 3"):
        Script("exit 3", name="setup").apply(LocalConnection())


def test_copy_dir_walks_tree_keeping_modes(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.sh").write_text("#!/bin/sh\n")
    (tmp_path / "a" / "x.sh").chmod(0o750)
    (tmp_path / "a" / "b" / "y.txt").write_text("y")
    (tmp_path / "a" / "b" / "skip.pyc").write_text("")
    uploads, dirs = CopyDir(tmp_path / "a", "/opt/app/", exclude=["*.pyc"]).uploads()
    assert [(u.remote_path, oct(u.mode)) for u in uploads] == [("/opt/app/x.sh", "0o750"),
                                                               ("/opt/app/b/y.txt", "0o644")]
    assert dirs == ["/opt/app", "/opt/app/b"]
    forced, _ = CopyDir(tmp_path / "a", "/opt/app", mode=0o600, owner="app").uploads()
    assert {u.mode for u in forced} == {0o600} and {u.owner for u in forced} == {"app"}
    with pytest.raises(Exception, match="not a directory"):
        CopyDir(tmp_path / "missing", "/x").uploads()


def test_copy_file_step_reports_put_result():
    c = LocalConnection()
    r = CopyFile("x", "/etc/x", mode=0o600).apply(c)
    assert r.changed and c.puts[0].remote_path == "/etc/x" and c.puts[0].mode == 0o600


def test_fanout_collects_per_host_results_and_lists_failures():
    good1, bad, good2 = LocalConnection("h1"), LocalConnection("h2", fail=True), LocalConnection("h3")

    def steps_for(conn):
        return [RunCommand(f"echo {conn.name}"), RunCommand("exit 1" if conn.name == "h3" else "true", name="last")]

    out = io.StringIO()
    console = Console(file=out, width=200)
    with pytest.raises(FanoutError) as ei:
        fanout([good1, bad, good2], steps_for, parallel=2, console=console)
    assert sorted(ei.value.failed) == ["h2", "h3"]
    res = ei.value.result
    assert res.hosts["h1"].ok and res.hosts["h1"].changed == 2
    assert len(res.hosts["h3"].results) == 1 and not res.hosts["h3"].ok
    text = out.getvalue()
    assert "3 host(s), 2 failed" in text and "FAILED" in text
    ok = fanout([LocalConnection("a"), LocalConnection("a")], [RunCommand("true")], progress=False)
    assert list(ok.hosts) == ["a", "a#2"] and ok.ok


def test_fanout_bounds_parallelism():
    import threading

    active, peak = [0], [0]
    cond = threading.Condition()

    class Slow(LocalConnection):
        def run(self, *a, **kw):
            with cond:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                cond.notify_all()
                # Wait (bounded) for a second host to be running at the same time, however slowly this
                # machine starts threads; then give a third, if fanout wrongly started one, time to show.
                cond.wait_for(lambda: peak[0] >= 2, timeout=30)
                cond.wait(0.2)
            try:
                return super().run("true", name="work")
            finally:
                with cond:
                    active[0] -= 1
                    cond.notify_all()

    fanout([Slow(f"s{i}") for i in range(6)], [RunCommand("x")], parallel=2, progress=False)
    assert peak[0] == 2


def test_consecutive_copies_share_one_transfer(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("f")
    c = LocalConnection()
    calls = []
    orig = c.put_files

    def spy(uploads, *, make_dirs=()):
        calls.append(([u.remote_path for u in uploads], list(make_dirs)))
        return orig(uploads, make_dirs=make_dirs)

    c.put_files = spy
    runs = []
    orig_run = c.put_files_and_run

    def spy_run(uploads, **kw):
        runs.append(kw["then"])
        return orig_run(uploads, **kw)

    c.put_files_and_run = spy_run
    steps = [CopyFile("a", "/x/a"), CopyDir(tmp_path / "d", "/x/d"), RunCommand("echo t"), CopyFile("b", "/x/b")]
    results = run_steps(c, steps)
    assert [r.name for r in results] == [s.name for s in steps] and all(r.changed for r in results)
    assert calls == [(["/x/a", "/x/d/f"], ["/x/d"]), (["/x/b"], [])]
    assert runs == ["echo t"] and results[2].output.stdout == "t\n"  # the command rode along with the copies
    assert c.commands == ["echo t"]
    # a Script after copies goes along too (uploaded as a temporary file), a step with stdin does not
    c.commands.clear()
    runs.clear()
    r = run_steps(c, [CopyFile("a", "/x/a"), Script("echo s; echo CHANGED", changed_marker="CHANGED")])
    assert r[1].changed and r[1].output.stdout == "s\nCHANGED\n" and len(runs) == 1
    assert runs[0].startswith("/bin/sh /tmp/.polyvm-script-") and "rm -f" in runs[0]
    runs.clear()
    r = run_steps(c, [CopyFile("a", "/x/a"), RunCommand("cat", stdin="in")])
    assert runs == [] and r[1].output.stdout == "in"
    # the same target twice cannot go in one stream: applied one after the other
    calls.clear()
    run_steps(c, [CopyFile("1", "/x/same"), CopyFile("2", "/x/same")])
    assert calls == [(["/x/same"], []), (["/x/same"], [])]


def test_script_in_the_exec_request_only_when_small_and_without_secrets():
    from polyvm.provisioners.exec import INLINE_LIMIT

    c = LocalConnection()
    (r,) = run_steps(c, [Script("echo 'it''s' inline", name="small")])
    assert r.output.stdout.strip() == "its inline" and "inline" in c.commands[-1]
    big = "echo big\n" + "# padding\n" * (INLINE_LIMIT // 10)
    (r,) = run_steps(c, [Script(big, name="big")])
    assert r.output.stdout.strip() == "big" and "padding" not in c.commands[-1]  # on stdin
    (r,) = run_steps(c, [Script("echo hidden-pw-1 >/dev/null; echo ok", name="s", secrets=["hidden-pw-1"])])
    assert r.output.stdout.strip() == "ok" and "hidden-pw-1" not in c.commands[-1]
    c2 = LocalConnection()
    c2.secrets = ["conn-secret-2"]
    run_steps(c2, [Script("echo conn-secret-2 >/dev/null", name="s2")])
    assert "conn-secret-2" not in c2.commands[-1]
    run_steps(c, [Script("echo $X", env={"X": "env-value-3"}, name="env")])
    assert "env-value-3" not in c.commands[-1]


def test_pipeline_runs_consecutive_steps_as_one_program_and_stops_at_the_first_failure(tmp_path):
    c = LocalConnection()
    out = tmp_path / "out"
    steps = [Script(f"echo a >> {out}", name="a"), RunCommand(f"echo b >> {out}", name="b"),
             Script(f"echo c >> {out}; exit 4", name="c"), RunCommand(f"echo d >> {out}", name="d")]
    with pytest.raises(CommandError) as ei:
        list(apply_steps(c, steps))
    assert len(c.commands) == 1 and out.read_text() == "a\nb\nc\n"
    assert ei.value.step == "c" and ei.value.exit_status == 4 and [r.name for r in ei.value.results] == ["a", "b"]


def test_pipeline_secret_or_env_sends_the_program_on_stdin():
    c = LocalConnection()
    steps = [Script("echo one", name="one"), RunCommand("echo $V", env={"V": "env-secret-4"}, name="two")]
    results = [r for _, r in apply_steps(c, steps)]
    assert c.commands == ["sh -s"] and results[1].output.stdout.strip() == "env-secret-4"


def test_cli_default_parallelism_is_fanouts():
    import inspect

    from polyvm.provisioners import cli
    from polyvm.provisioners.fanout import DEFAULT_PARALLEL, fanout as fanout_fn, run_recipe

    assert DEFAULT_PARALLEL == 64
    assert inspect.signature(fanout_fn).parameters["parallel"].default == DEFAULT_PARALLEL
    assert inspect.signature(run_recipe).parameters["parallel"].default == DEFAULT_PARALLEL
    opt = next(p for p in cli.exec_cmd.params if p.name == "parallel")
    assert opt.default == DEFAULT_PARALLEL


def test_a_subclass_with_its_own_apply_is_never_pipelined():
    class Talks(Script):
        def apply(self, conn):
            return super().apply(conn)

    c = LocalConnection()
    assert Talks("echo x").pipelined(c) is None and Script("echo x").pipelined(c) is not None
    list(apply_steps(c, [Talks("echo 1", name="t1"), Talks("echo 2", name="t2")]))
    assert len(c.commands) == 2
