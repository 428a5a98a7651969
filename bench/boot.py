"""Time from `Engine.up` to a first pinned login on a local host, booted directly and through cloud-init.

Run as root: ``.venv/bin/python bench/boot.py [runs]``. Prints a table (seconds: median, min, max).
Hosts live in a throw-away state dir and are removed at the end.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from polyvm.backends.local import engine as local_engine
from polyvm.provisioners import Connection


def one(eng: local_engine.Engine, boot: str, private: str, public: str) -> float:
    t0 = time.monotonic()
    host = eng.up(authorized_keys=public, user="bench", boot=boot)
    try:
        with Connection(host.guest_ip, user="bench", private_key=private, host_key=host.host_key,
                        deadline=120) as c:
            c.run("true")
            assert c.host_key_status == "pinned"
        return time.monotonic() - t0
    finally:
        eng.down(host)


def main(runs: int = 5) -> None:
    private, public = local_engine.generate_host_key("bench")
    with tempfile.TemporaryDirectory(prefix="polyvm-bench-boot-") as state:
        eng = local_engine.Engine(state)
        results: dict[str, list[float]] = {"direct": [], "cloud-init": []}
        for _ in range(runs):
            for boot in results:  # interleaved, so load changes hit both alike
                results[boot].append(one(eng, boot, private.decode(), public))
    print(f"{'boot':<12} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7}")
    for boot, xs in results.items():
        print(f"{boot:<12} {len(xs):>4} {statistics.median(xs):>9.2f} {min(xs):>7.2f} {max(xs):>7.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
