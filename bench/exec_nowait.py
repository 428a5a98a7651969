#!/usr/bin/env python3
"""Experiment: round trips per remote command with stdin, as polyvm runs it today vs without waiting for
the exec request's reply, over the delaying relay (bench/relay.py).

    python bench/exec_nowait.py --rtt 100 --commands 7

Both variants use one polyvm Connection (its handshake) and then run ``--commands`` times
``sh -s`` with a short script on stdin:
  today     Connection.run(cmd, stdin=...)  (open channel; exec_command waits for CHANNEL_SUCCESS; stdin)
  no-wait   open channel; exec request with want_reply=False, stdin and EOF right behind it
  in-command  Connection.run("sh -c '<script>'"): the script in the exec request itself, no stdin
Finding: no-wait saves nothing against OpenSSH's sshd, which opens a session channel with a zero window
and grants it (WINDOW_ADJUST) only once the exec request has started the session, so stdin cannot
leave before one more round trip; only a command without stdin is 2 round trips (open, exec).
Prints RTTs waited per variant (counted by the relay) and wall time. Not a test; one engine host.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from relay import RelayProcess  # noqa: E402

SCRIPT = b"echo hello; exit 0\n"


def run_nowait(conn, command: str, stdin: bytes, timeout: float = 60.0) -> tuple[int, bytes]:  # noqa: ANN001
    """Exec without waiting for the reply: a refused exec closes the channel without an exit status."""
    import paramiko
    from paramiko.common import cMSG_CHANNEL_REQUEST

    t = conn._ensure()
    chan = t.open_session(timeout=timeout)
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("exec")
    m.add_boolean(False)
    m.add_string(command)
    t._send_user_message(m)
    chan.sendall(stdin)
    chan.shutdown_write()
    out = bytearray()
    chan.settimeout(timeout)
    while True:
        b = chan.recv(65536)
        if not b:
            break
        out += b
    ok = chan.status_event.wait(timeout)
    status = chan.exit_status if ok else -1
    chan.close()
    return status, bytes(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt", type=float, default=100.0, help="ms")
    ap.add_argument("--commands", type=int, default=7)
    ap.add_argument("--trace", action="store_true", help="print the relay's per-chunk log")
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/polyvm-bench-latency/hosts-exec"))
    args = ap.parse_args(argv)
    benchlib.exit_on_signals()
    from polyvm.provisioners import Connection

    work = Path(tempfile.mkdtemp(prefix="polyvm-bench-exec-"))
    key = benchlib.make_client_key(work / "key")
    rows = []
    with RelayProcess(args.rtt / 1000, log=args.trace) as relay, benchlib.HostPool("engine", key, state_dir=args.state_dir) as pool:
        (h,) = pool.up(1)
        addr = "127.77.250.1"
        relay.add(h.address, 22, listen=addr)
        for variant in ("today", "no-wait", "in-command"):
            relay.reset()
            t0 = time.perf_counter()
            with Connection(addr, "root", private_key_path=str(key.private_key_path), host_key=h.host_key) as c:
                for _ in range(args.commands):
                    if variant == "today":
                        r = c.run("sh -s", stdin=SCRIPT)
                        assert r.stdout.strip() == "hello", r
                    elif variant == "in-command":
                        r = c.run("sh -c " + shlex.quote(SCRIPT.decode()))
                        assert r.stdout.strip() == "hello", r
                    else:
                        st, out = run_nowait(c, "sh -s", SCRIPT)
                        assert st == 0 and out.strip() == b"hello", (st, out)
            dt = time.perf_counter() - t0
            time.sleep(args.rtt / 1000 + 0.3)
            (cs,) = relay.connections(addr)
            if args.trace:
                print(f"# {variant}")
                for t, d, n, turn, hop in cs.log:
                    print(f"{t * 1000:9.1f} ms {d} {n:6d} B turn {turn:3d} hop {hop}")
            rows.append([variant, str(args.commands), f"{cs.round_trips:g}", f"{cs.turns}", benchlib.fmt_s(dt)])
    print(benchlib.markdown_table(["variant", "commands", "RTTs waited", "turns", "wall s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
