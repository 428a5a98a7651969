"""lb.json, the local load balancer's record, is written through a temp file of its own per write."""

from __future__ import annotations

import json
import threading

from polyvm.backends.local.loadbalancer import LbRecord, LocalLoadBalancer


def _lb(tmp_path, **kw) -> LocalLoadBalancer:
    rec = LbRecord(id="pvlb-7", index=7, fleet="web", state_dir=str(tmp_path), address="198.18.199.2",
                   host_ip="198.18.199.1", veth="pvlb7f", **kw)
    rec.dir.mkdir(parents=True)
    return LocalLoadBalancer(rec)


def test_a_save_leaves_another_writers_temp_file_alone(tmp_path):
    lb = _lb(tmp_path)
    # Another writer is between writing its temp file and renaming it (the old code's fixed name).
    theirs = lb.record.dir / "lb.tmp"
    theirs.write_text('{"status": "up"}')
    lb._save()
    assert theirs.read_text() == '{"status": "up"}', "the save wrote over another writer's temp file"
    assert json.loads((lb.record.dir / "lb.json").read_text())["id"] == "pvlb-7"


def test_concurrent_saves_all_succeed_and_leave_one_whole_record(tmp_path):
    lb = _lb(tmp_path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        mine = LocalLoadBalancer(LbRecord.from_json({**lb.record.to_json(), "pid": n}))
        try:
            for _ in range(100):
                mine._save()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer did not finish within 120 s"
    assert not errors, f"concurrent saves failed: {errors[:3]}"
    record = json.loads((lb.record.dir / "lb.json").read_text())
    assert record["pid"] in range(8)
    assert sorted(p.name for p in lb.record.dir.iterdir()) == ["lb.json"], "temp files left behind"
    assert (lb.record.dir / "lb.json").stat().st_mode & 0o777 == 0o600
