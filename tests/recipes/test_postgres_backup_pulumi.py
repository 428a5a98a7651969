"""The backup: section in the Pulumi form (mock runtime): the cipher passphrase is generated as a secret and
reaches the host only through secret stdin."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pulumi")
pytest.importorskip("pulumi_random", reason="generated secrets need pulumi-random (polyvm[postgres])")

from polyvm.spec import parse_spec  # noqa: E402

from test_postgres_pulumi import _secret, declare, spec_data  # noqa: E402


def test_backup_steps_and_a_generated_cipher_passphrase_kept_secret():
    spec = parse_spec(spec_data(data_disks=[
        {"name": "pgdata", "size_gb": 50, "mount_point": "/var/lib/postgresql"},
        {"name": "pgbackrest", "size_gb": 100, "mount_point": "/srv/pgbackrest"}]))
    settings = {"users": [{"name": "app", "password": "given-password-42"}], "databases": [{"name": "app"}],
                "backup": {"retention_full": 4}}
    value, resources = declare("aws", settings, spec=spec)
    mine = {n: i for _t, n, i in resources if n.startswith("db1-postgres")}
    assert "db1-postgres-backup:cipher_pass-password" in mine
    steps = [n for n in mine if n.startswith("db1-postgres-0") or n.startswith("db1-postgres-1")]
    assert any(n.endswith("backup-repository") for n in steps) and any(n.endswith("-backups") for n in steps)
    repo = next(i for n, i in mine.items() if n.endswith("backup-repository"))
    assert _secret(repo["stdin"])
    assert "repo1-cipher-pass=rnd-db1-postgres-backup:cipher_pass-password-pw" in repo["stdin"]["value"]
    assert "repo1-retention-full=4" in repo["stdin"]["value"]
    clear = json.dumps([i for n, i in mine.items() if not n.endswith("backup-repository")], default=str)
    assert "rnd-db1-postgres-backup:cipher_pass-password-pw" not in clear
    from polyvm.plan import _resolve

    # The passphrase is in the (secret) passwords output: a restore elsewhere needs it.
    assert _resolve(value["passwords"])["backup:cipher_pass"] == "rnd-db1-postgres-backup:cipher_pass-password-pw"
