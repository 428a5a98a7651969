"""The replication: section of the PostgreSQL recipe (pure): validation, pg_hba, settings, secrets."""

from __future__ import annotations

import pytest

from polyvm.errors import SpecError
from polyvm.recipes.postgres import build_steps, layout_for, parse_inputs
from polyvm.recipes.postgres.replication import PASSWORD_SECRET

LAYOUT = layout_for("debian", "12", "15", data_mount="/srv/postgresql")
MEMBERS = [{"name": "pg0", "address": "10.0.0.10"}, {"name": "pg1", "address": "10.0.0.11"},
           {"name": "pg2", "address": "10.0.0.12"}]


def inputs(**rep):
    return parse_inputs({"allowed_cidrs": ["10.1.0.0/16"], "users": [{"name": "app", "password": "p" * 16}],
                         "replication": {"members": MEMBERS, "primary": "pg0", **rep}})


@pytest.mark.parametrize("rep, problem", [
    ({"primary": "pg9"}, "not one of the members"),
    ({"synchronous": 3}, "more than the 2 standbys"),
    ({"members": [MEMBERS[0], {**MEMBERS[1], "name": "pg0"}]}, "names must be unique"),
    ({"members": [MEMBERS[0], {**MEMBERS[1], "address": "10.0.0.10"}]}, "addresses must be unique"),
    ({"members": [{"name": "pg0", "address": "db.example"}, MEMBERS[1]]}, "not an IP address"),
    ({"members": [MEMBERS[0]]}, "at least 2"),
    ({"user": "postgres"}, "not a usable role name"),
    ({"password": "short"}, "at least 12"),
])
def test_bad_replication_inputs_are_refused(rep, problem):
    with pytest.raises(SpecError, match=problem):
        inputs(**rep)


def test_replication_over_hostssl_scram_from_the_members_only():
    i = inputs(password="r" * 20, synchronous=1)
    steps = build_steps(i, LAYOUT)
    files = next(s for s in steps if s.name == "configuration").files
    hba = files[1].content
    repl = [line.split() for line in hba.splitlines() if line.startswith("hostssl replication")]
    assert repl == [["hostssl", "replication", "replicator", f"{m['address']}/32", "scram-sha-256"] for m in MEMBERS]
    assert not any(" replication " in line and "hostssl" not in line for line in hba.splitlines()
                   if not line.startswith("#"))
    assert "synchronous_standby_names = 'FIRST 1 (pg0, pg1, pg2)'" in files[0].content
    assert "synchronous_standby_names = ''" in [
        f for f in build_steps(inputs(password="r" * 20), LAYOUT) if f.name == "configuration"][0].files[0].content
    names = [s.name for s in steps]
    assert names.index("replica") < names.index("cluster") < names.index("server") < names.index("replication")


def test_replication_password_is_generated_and_never_in_a_script():
    i = inputs()
    assert i.missing_passwords() == [PASSWORD_SECRET]
    i = i.with_passwords({PASSWORD_SECRET: "s3cret-replication-pw"})
    for s in build_steps(i, LAYOUT):
        if s.name in ("replica", "replication"):
            assert "s3cret-replication-pw" not in s.script
            assert "s3cret-replication-pw" in s.stdin and "s3cret-replication-pw" in s.secrets
    # The verifier is stable (same salt from the password), so a re-run can compare it.
    assert i.replication.verifier() == i.replication.verifier()
    assert i.replication.verifier().startswith("SCRAM-SHA-256$4096:")
