"""Copy 3 small files and run a short script on N hosts: polyvm's SSH layer vs plain OpenSSH vs minimal paramiko.

    python bench/ssh_vs_openssh.py                 # 10 hosts, 5 rounds
    python bench/ssh_vs_openssh.py --hosts 50 --rounds 3

Contenders (all in parallel over the hosts, all verifying pinned host keys):
  polyvm     fanout([Connection...], [CopyFile x3, Script]) — one SSH connection per host
  polyvm-2nd the same again with unchanged files (hash check only, nothing transferred)
  openssh    per host: `scp f1 f2 f3 host:dir/` then `ssh host sh -s < script` (two connections per host)
  paramiko   per host: SSHClient.connect, exec mkdir, SFTP put x3, exec script (one connection per host)
Each round writes new file contents (except polyvm-2nd), so every contender really transfers. Prints a
Markdown table of median / min wall-clock seconds. Not a test: asserts nothing about time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

FILES = ("a.conf", "b.txt", "c.json")
SCRIPT = "set -e\ncd \"$1\"\ncat a.conf b.txt c.json | sha256sum > sum\nhostname >> sum\n"


def write_payload(d: Path, round_no: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(FILES):
        (d / n).write_text(f"round {round_no} file {n}\n" + "x" * (500 * (i + 1)) + "\n")


def run_polyvm(hosts, key, d: Path, rdir: str) -> None:
    from polyvm.provisioners import Connection, CopyFile, Script, fanout

    steps = [CopyFile(d / n, f"{rdir}/{n}") for n in FILES] + [Script(SCRIPT, args=[rdir], name="script")]
    conns = [Connection(h.address, private_key_path=key.private_key_path, host_key=h.host_key) for h in hosts]
    fanout(conns, steps, parallel=len(hosts), progress=False)


def run_openssh(hosts, key, d: Path, rdir: str, known_hosts: Path) -> None:
    opts = ["-i", str(key.private_key_path), "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=error"]

    def one(h) -> None:
        subprocess.run(["scp", "-q", *opts, *(str(d / n) for n in FILES), f"root@{h.address}:{rdir}/"],
                       check=True, capture_output=True)
        subprocess.run(["ssh", *opts, f"root@{h.address}", "sh", "-s", rdir], input=SCRIPT.encode(), check=True,
                       capture_output=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(one, hosts))


def run_paramiko(hosts, key, d: Path, rdir: str, known_hosts: Path) -> None:
    import paramiko

    pkey = paramiko.Ed25519Key.from_private_key_file(str(key.private_key_path))

    def exec_(client, cmd: str, stdin: bytes | None = None) -> None:
        chan = client.get_transport().open_session()
        chan.exec_command(cmd)
        if stdin:
            chan.sendall(stdin)
        chan.shutdown_write()
        if chan.recv_exit_status() != 0:
            raise RuntimeError(f"{cmd} failed")
        chan.close()

    def one(h) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(h.address, username="root", pkey=pkey, look_for_keys=False, allow_agent=False, timeout=10)
        try:
            exec_(client, f"mkdir -p {rdir}")
            sftp = client.open_sftp()
            for n in FILES:
                sftp.put(str(d / n), f"{rdir}/{n}")
            sftp.close()
            exec_(client, f"sh -s {rdir}", SCRIPT.encode())
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(one, hosts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hosts-from", choices=("engine", "testhost"), default="engine")
    ap.add_argument("--keep-bashrc", action="store_true",
                    help="keep this machine's root ~/.bashrc in the hosts (pyenv init costs ~0.1 s per SSH session; "
                         "by default the hosts get Debian's stock root .bashrc, like a cloud image)")
    args = ap.parse_args(argv)
    benchlib.exit_on_signals()
    work = Path(tempfile.mkdtemp(prefix="polyvm-bench-ssh-"))
    key = benchlib.make_client_key(work / "key")
    times: dict[str, list[float]] = {"polyvm": [], "polyvm-2nd": [], "openssh": [], "paramiko": []}
    with benchlib.HostPool(args.hosts_from, key) as pool:
        hosts = pool.up(args.hosts)
        known_hosts = work / "known_hosts"
        known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
        prep = "mkdir -p /root/bench-openssh /root/bench-paramiko /root/bench-polyvm"
        if not args.keep_bashrc:
            prep += "; cp /usr/share/base-files/dot.bashrc /root/.bashrc"
        for h in hosts:  # scp cannot create the target directory; make them all once, untimed
            subprocess.run(["ssh", "-i", str(key.private_key_path), "-o", f"UserKnownHostsFile={known_hosts}",
                            "-o", "BatchMode=yes", f"root@{h.address}", prep], check=True)
        for r in range(args.rounds):
            order = [("polyvm", lambda d: run_polyvm(hosts, key, d, "/root/bench-polyvm")),
                     ("polyvm-2nd", lambda d: run_polyvm(hosts, key, d, "/root/bench-polyvm")),
                     ("openssh", lambda d: run_openssh(hosts, key, d, "/root/bench-openssh", known_hosts)),
                     ("paramiko", lambda d: run_paramiko(hosts, key, d, "/root/bench-paramiko", known_hosts))]
            if r % 2:  # alternate the order so no contender always runs on a warmer machine
                order = order[2:] + order[:2]
            for name, fn in order:
                d = work / f"payload-{name.split('-')[0]}"
                if name != "polyvm-2nd":
                    write_payload(d, r)
                t0 = time.perf_counter()
                fn(d)
                times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                  file=sys.stderr)
    rows = []
    base = benchlib.median(times["openssh"])
    for name, ts in times.items():
        med = benchlib.median(ts)
        rows.append([name, f"{med:.2f}", f"{min(ts):.2f}", f"{max(ts):.2f}", f"{med / base:.2f}"])
    print(f"\n{args.hosts} hosts, 3 small files + a short script, {args.rounds} rounds, "
          f"{'this machine' if args.keep_bashrc else 'stock'} root .bashrc "
          f"(load {benchlib.loadavg()}, {benchlib.machine_info()['cpus']} CPUs)\n")
    print(benchlib.markdown_table(["contender", "median s", "min s", "max s", "÷ openssh"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
