"""The catalog plan: what differs between a snapshot and the inputs, the SQL that fixes it, and refusals."""

from __future__ import annotations

import pytest

from polyvm.errors import SpecError
from polyvm.recipes.postgres import parse_inputs
from polyvm.recipes.postgres.catalog import Snapshot, change_lines, parse_snapshot, plan, plan_sql, snapshot_sql
from polyvm.recipes.postgres.roles import scram_verifier

PW = "app-password-123"


def _inputs(**extra):
    data = {"allowed_cidrs": ["10.0.0.0/8"],
            "users": [{"name": "app", "password": PW}, {"name": "ro", "login": False}],
            "databases": [{"name": "appdb", "extensions": ["pgcrypto"]}],
            "grants": [{"role": "ro", "database": "appdb", "database_privileges": ["CONNECT"],
                        "schema_privileges": ["USAGE"], "table_privileges": ["SELECT"]}]}
    data.update(extra)
    return parse_inputs(data)


def _role(name, **kw):
    r = {"name": name, "superuser": False, "login": True, "createdb": False, "createrole": False,
         "replication": False, "bypassrls": False, "connection_limit": -1, "valid_until": "infinity",
         "verifier": None, "member_of": [], "owns": {}, "acl_dbs": []}
    r.update(kw)
    return r


def _done() -> Snapshot:
    return Snapshot(
        roles={"postgres": _role("postgres", superuser=True), "app": _role("app", verifier=scram_verifier(PW)),
               "ro": _role("ro", login=False)},
        databases={"appdb": {"name": "appdb", "owner": "app", "encoding": "UTF8", "lc_collate": "C.UTF-8",
                             "lc_ctype": "C.UTF-8", "privileges": {"app": ["CONNECT", "CREATE", "TEMPORARY"],
                                                                   "ro": ["CONNECT"]}}},
        available={"pgcrypto": ["1.3"]},
        db_state={"appdb": {"name": "appdb", "extensions": {"plpgsql": "1.0", "pgcrypto": "1.3"},
                            "grants": [{"i": 0, "schema_exists": True, "schema_missing": [], "tables_missing": {},
                                        "default_missing": {"app": []}}]}})


def test_a_matching_server_needs_nothing_and_passwords_never_go_in_clear():
    assert plan(_inputs(), _done()).changes == []
    fresh = plan(_inputs(), Snapshot(available={"pgcrypto": ["1.3"]}))
    sql = plan_sql(fresh)
    assert PW not in sql and "PASSWORD 'SCRAM-SHA-256$4096:" in sql
    assert "SET log_statement = 'none'" in sql
    assert "CREATE EXTENSION IF NOT EXISTS \"pgcrypto\"" in sql and '\\c "appdb"' in sql
    assert "ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" IN SCHEMA \"public\" GRANT SELECT ON TABLES TO \"ro\"" in sql
    assert sql.index("CREATE DATABASE") < sql.index('\\c "appdb"') < sql.index("CREATE EXTENSION")


def test_each_kind_of_difference_is_one_line():
    snap = _done()
    snap.roles["app"] = _role("app", createdb=True, verifier=scram_verifier("other-password-1"), member_of=["ro"])
    snap.roles["rogue"] = _role("rogue", superuser=True)
    snap.roles["intruder"] = _role("intruder")
    snap.databases["appdb"]["owner"] = "rogue"
    snap.databases["appdb"]["privileges"]["ro"] = []
    snap.db_state["appdb"]["extensions"] = {"plpgsql": "1.0"}
    snap.db_state["appdb"]["grants"][0].update(schema_missing=["USAGE"], tables_missing={"SELECT": 2},
                                               default_missing={"app": ["SELECT"]})
    p = plan(_inputs(), snap)
    lines = change_lines(p)
    assert "role app: createdb is true, want false" in lines
    assert "role app: password differs" in lines
    assert "role app: member of ro, not declared" in lines
    assert "database appdb: owner is rogue, want app" in lines
    assert "database appdb: extension pgcrypto missing" in lines
    assert "database appdb: ro lacks CONNECT" in lines
    assert "database appdb: ro lacks SELECT on 2 table(s) in schema public" in lines
    assert any("default SELECT" in x for x in lines)
    assert [n.what for n in p.notices] == ["role intruder: a login role polyvm does not declare",
                                           "role rogue: a superuser polyvm does not declare"]


def test_locale_change_on_existing_database_and_unavailable_extension_are_refused():
    p = plan(_inputs(databases=[{"name": "appdb", "lc_collate": "en_US.UTF-8", "extensions": ["nosuch"]}]), _done())
    assert any("lc_collate is C.UTF-8, not en_US.UTF-8; PostgreSQL cannot change it" in r for r in p.refusals)
    assert any("extension nosuch is not available" in r for r in p.refusals)
    # A new database with a locale is made from template0.
    new = plan(_inputs(databases=[{"name": "other", "owner": "app", "encoding": "utf-8", "lc_collate": "C.UTF-8"}],
                       grants=[]), _done())
    assert "ENCODING %L LC_COLLATE %L TEMPLATE %I', 'other', 'app', 'UTF8', 'C.UTF-8', 'template0'" in plan_sql(new)


def test_absent_role_owning_objects_is_refused_unless_reassigned():
    snap = _done()
    snap.roles["old"] = _role("old", owns={"appdb": 3}, acl_dbs=["appdb"])
    users = [{"name": "app", "password": PW}, {"name": "ro", "login": False}, {"name": "old", "state": "absent"}]
    p = plan(_inputs(users=users), snap)
    assert p.refusals == ["role old (state: absent) owns 3 object(s) in database appdb; give reassign_owned_to: "
                          "<role> or drop them first"]
    users[2]["reassign_owned_to"] = "app"
    sql = plan_sql(plan(_inputs(users=users), snap))
    assert sql.index('REASSIGN OWNED BY "old" TO "app"') < sql.index('DROP OWNED BY "old"') < sql.index(
        'DROP ROLE IF EXISTS "old"')
    # Declared ahead of time (Pulumi), the server itself refuses when it owns anything.
    ahead = plan_sql(plan(_inputs(users=[*users[:2], {"name": "old", "state": "absent"}]), None, plaintext=True))
    assert "RAISE EXCEPTION 'role old (state: absent) owns objects" in ahead


def test_snapshot_script_reads_every_declared_database_in_one_psql_run():
    sql = snapshot_sql(_inputs())
    assert sql.count("\\if :polyvm_db") == 1 and '\\c "appdb"' in sql and "pg_available_extension_versions" in sql
    out = ('roles\t[{"name": "app", "login": true}]\ndatabases\t[]\n'
           'db\t{"name": "appdb", "extensions": {}, "grants": []}\nSET\n')
    snap = parse_snapshot(out)
    assert set(snap.roles) == {"app"} and snap.db_state["appdb"]["extensions"] == {}


@pytest.mark.parametrize("data, message", [
    ({"users": [{"name": "app", "connection_limit": -2}]}, "connection_limit"),
    ({"users": [{"name": "app", "valid_until": "soon"}]}, "is not an ISO date"),
    ({"users": [{"name": "app", "member_of": ["pg_execute_server_program"]}]}, "not a predefined role"),
    ({"users": [{"name": "app", "member_of": ["nobody"]}]}, "member_of 'nobody' is not one of the users"),
    ({"users": [{"name": "ro", "login": False, "password": "a-long-password"}]}, "cannot log in"),
    ({"users": [{"name": "app"}], "databases": [{"name": "app", "state": "absent"}]}, "confirm_drop: app"),
    ({"users": [{"name": "app"}], "databases": [{"name": "app", "template": "mydb"}]}, "template0 or template1"),
    ({"users": [{"name": "app"}], "grants": [{"role": "app", "database": "x", "table_privileges": ["SELECT"]}]},
     "database 'x' is not one of the databases"),
    ({"users": [{"name": "app"}], "databases": [{"name": "app"}],
      "grants": [{"role": "app", "database": "app", "table_privileges": ["EXECUTE"]}]}, "not a table privilege"),
    ({"users": [{"name": "app"}], "databases": [{"name": "app"}], "grants": [{"role": "app", "database": "app"}]},
     "grants nothing"),
    ({"hba": [{"address": "10.1.0.0/24", "method": "trust"}]}, "'trust' is refused"),
    ({"hba": [{"address": "10.1.0.0/24", "method": "md5"}]}, "'md5' is refused"),
    ({"hba": [{"type": "host", "address": "10.1.0.0/24"}]}, "only hostssl"),
    ({"hba": [{"address": "0.0.0.0/0"}]}, "hba[0]: address 0.0.0.0/0 opens PostgreSQL to the world"),
    ({"hba": [{"address": "10.1.0.0/24", "method": "cert"}]}, "method cert needs client_ca_file"),
])
def test_bad_model_input_is_one_clear_line(data, message):
    with pytest.raises(SpecError) as exc:
        parse_inputs({"allowed_cidrs": ["10.0.0.0/8"], **data})
    assert message in str(exc.value)


def test_extensions_add_their_preload_library_and_disk_size_sets_wal():
    i = parse_inputs({"allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app"}], "disk_mb": 20480,
                      "settings": {"shared_preload_libraries": "auto_explain"},
                      "databases": [{"name": "app", "extensions": ["pg_stat_statements", "pgcrypto"]}]})
    s = i.effective_settings(2048)
    assert s["shared_preload_libraries"] == "auto_explain,pg_stat_statements"
    assert s["shared_buffers"] == "512MB" and s["effective_cache_size"] == "1536MB"
    assert s["max_wal_size"] == "2048MB" and s["min_wal_size"] == "512MB"
