"""The backup: section of the PostgreSQL recipe (pure): validation, rendering, secrets, status assessment."""

from __future__ import annotations

import json

import pytest

from polyvm.errors import SpecError
from polyvm.recipes.postgres import build_steps, layout_for, parse_inputs
from polyvm.recipes.postgres.backup import CIPHER_SECRET, render_pgbackrest_conf
from polyvm.recipes.postgres.status import HostStatus, assess, parse_status

BASE = {"allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app", "password": "p" * 16}],
        "mount_point": "/srv/postgresql"}
LAYOUT = layout_for("debian", "12", "15", data_mount="/srv/postgresql")


def inputs(**backup):
    return parse_inputs({**BASE, "backup": backup})


def test_without_backup_the_steps_are_unchanged():
    names = [s.name for s in build_steps(parse_inputs(BASE), LAYOUT)]
    assert not {"backup repository", "restore", "backups", "recovery"} & set(names)


def test_backup_steps_and_archive_settings_in_the_managed_dropin():
    i = inputs(cipher_pass="c" * 24)
    steps = build_steps(i, LAYOUT)
    names = [s.name for s in steps]
    assert names.index("backup repository") < names.index("cluster") < names.index("server") < names.index("backups")
    dropin = next(s for s in steps if s.name == "configuration").files[0].content
    assert "archive_mode = on" in dropin
    assert "archive_command = 'pgbackrest --stanza=main archive-push %p'" in dropin


def test_user_settings_cannot_set_archiving():
    with pytest.raises(SpecError, match="archive_command"):
        parse_inputs({**BASE, "settings": {"archive_command": "cp %p /x"}, "backup": {}})


def test_cipher_passphrase_is_a_generated_secret_sent_on_stdin_only():
    i = inputs()
    assert i.missing_passwords() == [CIPHER_SECRET]
    filled = i.with_passwords({CIPHER_SECRET: "s" * 32})
    assert filled.missing_passwords() == []
    step = next(s for s in build_steps(filled, LAYOUT) if s.name == "backup repository")
    assert "s" * 32 not in step.script and "s" * 32 in step.stdin
    assert "s" * 32 in step.secrets
    assert "s" * 32 not in repr(filled)
    conf = render_pgbackrest_conf(filled.backup, LAYOUT, 5432)
    assert "repo1-cipher-type=aes-256-cbc" in conf and f"repo1-cipher-pass={'s' * 32}" in conf
    assert "pg1-path=/srv/postgresql/15/main" in conf and "repo1-retention-full=2" in conf


def test_unencrypted_needs_no_secret():
    assert inputs(encrypt=False).missing_passwords() == []


@pytest.mark.parametrize("repo, problem", [
    ({"type": "s3"}, "needs its s3"),
    ({"type": "posix", "azure": {"account": "a", "container": "c", "key": "k"}}, "takes no azure"),
    ({"path": "relative"}, "absolute path"),
    ({"type": "s3", "s3": {"bucket": "b", "endpoint": "e", "region": "r", "key": "k", "key_secret": "s"},
      "gcs": {"bucket": "b", "key": "{}"}}, "takes no gcs"),
])
def test_repository_settings_are_validated(repo, problem):
    with pytest.raises(SpecError, match=problem):
        inputs(repo=repo)


def test_object_storage_settings_per_backend():
    spaces = inputs(cipher_pass="c" * 24, repo={"type": "s3", "path": "/pg", "s3": {
        "bucket": "db-backups", "endpoint": "fra1.digitaloceanspaces.com", "region": "fra1",
        "key": "AKIAEXAMPLE", "key_secret": "very-secret-key", "uri_style": "path"}})
    conf = render_pgbackrest_conf(spaces.backup, LAYOUT, 5432)
    assert "repo1-type=s3" in conf and "repo1-s3-endpoint=fra1.digitaloceanspaces.com" in conf
    assert "repo1-s3-uri-style=path" in conf
    assert "very-secret-key" in spaces.backup.secret_values()
    assert "very-secret-key" not in repr(spaces)
    az = inputs(encrypt=False, repo={"type": "azure", "azure": {"account": "acct", "container": "pg", "key": "k=="}})
    assert "repo1-azure-account=acct" in render_pgbackrest_conf(az.backup, LAYOUT, 5432)
    gcs = inputs(encrypt=False, repo={"type": "gcs", "gcs": {"bucket": "b", "key": '{"type": "service_account"}'}})
    assert "repo1-gcs-key=/etc/pgbackrest/gcs-key.json" in render_pgbackrest_conf(gcs.backup, LAYOUT, 5432)


def test_restore_request_needs_a_time_zone_and_renders_a_time_target():
    with pytest.raises(SpecError, match="time zone"):
        inputs(restore={"target_time": "2026-12-01T08:00:00"})
    i = inputs(cipher_pass="c" * 24, restore={"target_time": "2026-12-01T09:00:00+01:00"})
    script = next(s for s in build_steps(i, LAYOUT) if s.name == "restore").script
    assert "--type=time --target='2026-12-01 08:00:00.000000+00' --target-action=promote" in script
    assert "refusing to restore: a PostgreSQL server is running" in script
    forced = inputs(cipher_pass="c" * 24, restore={"force": True})
    script = next(s for s in build_steps(forced, LAYOUT) if s.name == "restore").script
    assert "refusing" not in script and 'delta="--delta"' in script


def _status(**archiver):
    server = {"role": "primary", "archive_mode": "on", "replicas": [], "archiver": archiver}
    info = [{"status": {"code": 0, "message": "ok"},
             "backup": [{"label": "20261201-080000F", "type": "full", "timestamp": {"start": 1, "stop": 2}}]}]
    return json.dumps(server) + "\n" + json.dumps(info) + "\n"


def test_status_flags_stopped_archiving():
    ok = parse_status("h", _status(archived_count=5, last_archived_time="2026-12-01T08:00:00+00:00",
                                   failed_count=1, last_failed_time="2026-12-01T07:00:00+00:00"))
    assert ok.problems == [] and ok.last_backup["label"] == "20261201-080000F"
    stopped = parse_status("h", _status(archived_count=5, last_archived_time="2026-12-01T08:00:00+00:00",
                                        failed_count=3, last_failed_time="2026-12-01T08:05:00+00:00",
                                        last_failed_wal="000000010000000000000007"))
    assert len(stopped.problems) == 1 and "WAL archiving has stopped" in stopped.problems[0]
    never = assess(HostStatus("h", role="primary", archive_mode="on",
                              archiver={"failed_count": 2, "last_failed_time": "2026-12-01T08:05:00+00:00"}))
    assert any("stopped" in p for p in never) and any("no backup" in p for p in never)
    standby = assess(HostStatus("h", role="standby", archive_mode="on", archiver={"failed_count": 9,
                                "last_failed_time": "2026-12-01T08:05:00+00:00"}))
    assert standby == []
