"""The recipe's inputs: what is refused before any host is touched, and the defaults."""

from __future__ import annotations

import os
import stat

import pytest

from polyvm.errors import ConfigError, SpecError
from polyvm.recipes.postgres import default_memory_settings, ensure_passwords, parse_inputs
from polyvm.recipes.postgres.inputs import default_version

BASE = {"allowed_cidrs": ["10.0.0.0/16"], "users": [{"name": "app"}], "databases": [{"name": "app"}]}


def problems(data) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_inputs(data)
    return exc.value.problems


def test_allowed_cidrs_are_required_and_have_no_world_default():
    assert any("allowed_cidrs" in p and "required" in p for p in problems({"users": [{"name": "app"}]}))
    world = problems({**BASE, "allowed_cidrs": ["0.0.0.0/0"]})
    assert any("opens PostgreSQL to the world" in p for p in world)
    assert parse_inputs({**BASE, "allowed_cidrs": ["0.0.0.0/0"], "allow_public": True}).allow_public
    assert any("host bits" in p for p in problems({**BASE, "allowed_cidrs": ["10.0.0.1/16"]}))


def test_managed_settings_and_bad_names_are_refused():
    p = problems({**BASE, "settings": {"password_encryption": "md5", "ssl": False, "work mem": "4MB"}})
    text = " ".join(p)
    assert "password_encryption" in text and "scram-sha-256" in text
    assert "'ssl' cannot be set" in text and "'work mem' is not a setting name" in text
    assert any("reserved" in x for x in problems({**BASE, "users": [{"name": "postgres"}]}))
    assert any("not a valid user name" in x for x in problems({**BASE, "users": [{"name": "App; DROP"}]}))
    assert any("owner 'nobody' is not one of the users" in x
               for x in problems({**BASE, "databases": [{"name": "app", "owner": "nobody"}]}))
    assert any("shorter than 12" in x for x in problems({**BASE, "users": [{"name": "app", "password": "short"}]}))
    assert any("absolute path" in x for x in problems({**BASE, "mount_point": "srv/pg"}))
    # the guest firewall and the data disk device are the guest baseline's, not the recipe's
    assert any("guest_firewall" in x for x in problems({**BASE, "guest_firewall": True}))
    assert any("data_device" in x for x in problems({**BASE, "data_device": "/dev/sdb"}))


def test_password_is_secret_in_repr_and_errors():
    i = parse_inputs({**BASE, "users": [{"name": "app", "password": "s3cret-password-value"}]})
    assert "s3cret-password-value" not in repr(i) and "s3cret-password-value" not in str(i.model_dump())


def test_ingress_rule_is_the_postgres_port_from_the_allowed_cidrs():
    i = parse_inputs({**BASE, "port": 6432})
    r = i.ingress_rule()
    assert (r.port, r.cidrs, r.protocol) == (6432, ["10.0.0.0/16"], "tcp")


def test_memory_defaults_follow_ram_and_user_settings_win():
    assert default_memory_settings(4096) == {"shared_buffers": "1024MB", "effective_cache_size": "3072MB",
                                             "maintenance_work_mem": "256MB", "work_mem": "10MB"}
    small = default_memory_settings(512)
    assert small["shared_buffers"] == "128MB" and small["work_mem"] == "4MB"
    i = parse_inputs({**BASE, "settings": {"work_mem": "32MB", "max_connections": 50}})
    eff = i.effective_settings(memory_mb=8192)
    assert eff["shared_buffers"] == "2048MB" and eff["work_mem"] == "32MB" and eff["max_connections"] == 50
    assert parse_inputs(BASE).effective_settings(None) == {}


def test_version_defaults_per_distribution():
    assert default_version("debian", "12") == "15"
    assert default_version("ubuntu", "24.04") == "16"
    assert default_version("ubuntu", "22.04") == "14"
    assert default_version("amazon-linux", "2023") == "16"
    assert default_version("rhel", "9") == "13"
    assert parse_inputs({**BASE, "version": 16}).version == "16"
    assert any("major version" in p for p in problems({**BASE, "version": "9.6"}))


def test_generated_passwords_go_to_a_0600_file_and_are_reused(tmp_path):
    path = tmp_path / "secrets" / "pg-passwords.json"
    i = parse_inputs({**BASE, "users": [{"name": "app"}, {"name": "ro", "password": "given-password-1"}]})
    filled, generated = ensure_passwords(i, path)
    assert generated == ["app"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pw = filled.users[0].password.get_secret_value()
    assert len(pw) >= 24 and filled.users[1].password.get_secret_value() == "given-password-1"
    again, generated2 = ensure_passwords(i, path)
    assert generated2 == [] and again.users[0].password.get_secret_value() == pw
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_passwords(i, path)
