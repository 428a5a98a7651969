"""The PostgreSQL model on a real host: roles with attributes and memberships, databases with locale, grants for
an application role and a read-only role, extensions (pg_stat_statements preloaded, with its restart), drops
guarded, and an unchanged re-run that sends nothing and costs no more exec channels than the read."""

from __future__ import annotations

import pytest

from polyvm.errors import RecipeError
from polyvm.host import Host
from polyvm.recipes.postgres import apply_postgres, parse_inputs

from pg_e2e import connect

psycopg = pytest.importorskip("psycopg", reason="psycopg is needed for client-side logins")

pytestmark = pytest.mark.e2e

APP_PW = "app-password-0123456789"
RO_PW = "reader-password-0123456789"


def model(host, **overrides):
    data = {
        "allowed_cidrs": [f"{host.record.host_ip}/32"],
        "memory_mb": 512,
        "users": [
            {"name": "app", "password": APP_PW, "connection_limit": 20},
            {"name": "readers", "login": False},
            {"name": "report", "password": RO_PW, "member_of": ["readers"], "valid_until": "2099-12-31"},
            {"name": "ops", "password": "ops-password-0123456789", "createrole": True, "createdb": True,
             "replication": True},
        ],
        "databases": [{"name": "app", "encoding": "UTF8", "lc_collate": "C.UTF-8", "lc_ctype": "C.UTF-8",
                       "extensions": ["pgcrypto", "pg_stat_statements"]}],
        "grants": [
            {"role": "readers", "database": "app", "database_privileges": ["CONNECT"],
             "schema_privileges": ["USAGE"], "table_privileges": ["SELECT"]},
        ],
    }
    data.update(overrides)
    return parse_inputs(data)


def run(host, inputs):
    with connect(host) as conn:
        result = apply_postgres(conn, inputs, host=Host(address=host.address, user=host.user, host_key=host.host_key))
        return result, conn.stats.channels


def login(host, user, password, dbname="app"):
    return psycopg.connect(host=host.address, port=5432, user=user, password=password, dbname=dbname,
                           sslmode="require", connect_timeout=10)


def psql(testhosts, host, sql: str, db: str = "postgres") -> str:
    r = testhosts.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-XAt", "-d", db, "-f", "-"], input=sql)
    return r.stdout.strip()


def test_roles_databases_grants_extensions_on_a_real_server(testhosts):
    (host,) = testhosts.up(fresh=True)
    first, _ = run(host, model(host))
    server = next(s for s in first.steps if s.name == "server")
    assert "started" in server.detail

    roles = psql(testhosts, host, "SELECT rolname, rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, "
                                  "rolconnlimit, rolvaliduntil IS NOT NULL AND rolvaliduntil <> 'infinity' "
                                  "FROM pg_roles WHERE rolname IN ('app','readers','report','ops') ORDER BY 1;")
    assert roles.splitlines() == ["app|t|f|f|f|20|f", "ops|t|t|t|t|-1|f", "readers|f|f|f|f|-1|f",
                                  "report|t|f|f|f|-1|t"]
    assert psql(testhosts, host, "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate "
                                 "FROM pg_database WHERE datname = 'app';") == "app|UTF8|C.UTF-8"
    assert psql(testhosts, host, "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension;", "app") == \
        "pg_stat_statements,pgcrypto,plpgsql"
    assert psql(testhosts, host, "SHOW shared_preload_libraries;") == "pg_stat_statements"

    # The application role creates a table; the read-only role (through its membership) reads it, and
    # tables created later too (default privileges), but cannot write.
    with login(host, "app", APP_PW) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY)")
        c.execute("INSERT INTO items VALUES (1), (2)")
        c.execute("SELECT count(*) FROM pg_stat_statements")  # preloaded: the view works
        c.commit()
    with login(host, "report", RO_PW) as c:
        assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 2
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO items VALUES (3)")

    # Unchanged: nothing sent, no reload, no restart; as many exec channels as a run without the model.
    before = psql(testhosts, host, "SELECT pg_postmaster_start_time();")
    second, channels = run(host, model(host))
    assert not second.changed, second.summary()
    assert psql(testhosts, host, "SELECT pg_postmaster_start_time();") == before
    # Today's thin model (one login role, one database) on a second host: its unchanged re-run opens as many
    # exec channels as the full model's.
    (thin_host,) = testhosts.up(fresh=True)
    thin = parse_inputs({"allowed_cidrs": [f"{thin_host.record.host_ip}/32"], "memory_mb": 512,
                         "users": [{"name": "app", "password": APP_PW}], "databases": [{"name": "app"}]})
    run(thin_host, thin)
    thin_again, thin_channels = run(thin_host, thin)
    assert not thin_again.changed
    assert channels == thin_channels, (channels, thin_channels)
    # pg_stat_statements on a running server: its preload library needs a restart, and the step says so.
    thin_start = psql(testhosts, thin_host, "SELECT pg_postmaster_start_time();")
    with_pss = thin.model_copy(update={"databases": parse_inputs({
        "allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app"}],
        "databases": [{"name": "app", "extensions": ["pg_stat_statements"]}]}).databases})
    added, _ = run(thin_host, with_pss)
    server = next(s for s in added.steps if s.name == "server")
    assert "restarted PostgreSQL (needed by: shared_preload_libraries)" in server.detail
    assert "database app: extension pg_stat_statements missing" in added.summary()
    assert psql(testhosts, thin_host, "SELECT pg_postmaster_start_time();") != thin_start
    # A grant-only change sends SQL but neither reloads nor restarts.
    restarted = psql(testhosts, thin_host, "SELECT pg_postmaster_start_time();")
    more = with_pss.model_copy(update={"users": [*with_pss.users, *parse_inputs({
        "allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "viewer", "login": False}]}).users]})
    changed, _ = run(thin_host, more)
    assert "role viewer: missing" in changed.summary()
    assert not any(s.changed for s in changed.steps if s.name in ("configuration", "server"))
    assert psql(testhosts, thin_host, "SELECT pg_postmaster_start_time();") == restarted

    # A locale change on the existing database is refused, nothing changed.
    bad = model(host, databases=[{"name": "app", "lc_collate": "C", "extensions": ["pgcrypto", "pg_stat_statements"]}])
    with pytest.raises(RecipeError, match="PostgreSQL cannot change it on an existing database"):
        run(host, bad)

    # Dropping a role that owns objects is refused with the list; with reassign_owned_to it goes.
    psql(testhosts, host, "CREATE ROLE legacy LOGIN; CREATE TABLE legacy_t (id int); "
                          "ALTER TABLE legacy_t OWNER TO legacy;", "app")
    users = [*model(host).model_dump(mode="python")["users"]]
    users = [u | {"password": p} for u, p in zip(users, [APP_PW, None, RO_PW, "ops-password-0123456789"])]
    for u in users:
        if u["password"] is None:
            del u["password"]
    with pytest.raises(RecipeError, match=r"role legacy \(state: absent\) owns 1 object\(s\) in database app"):
        run(host, model(host, users=[*users, {"name": "legacy", "state": "absent"}]))
    dropped, _ = run(host, model(host, users=[*users, {"name": "legacy", "state": "absent",
                                                        "reassign_owned_to": "app"}]))
    assert "role legacy: exists, declared absent" in dropped.summary()
    assert psql(testhosts, host, "SELECT count(*) FROM pg_roles WHERE rolname = 'legacy';") == "0"
    assert psql(testhosts, host, "SELECT tableowner FROM pg_tables WHERE tablename = 'legacy_t';", "app") == "app"

    # A database goes only with its confirmation (validated before anything runs).
    extra = model(host, users=users, databases=[*model(host).model_dump()["databases"],
                                                {"name": "scratch", "owner": "app"}])
    run(host, extra)
    assert psql(testhosts, host, "SELECT count(*) FROM pg_database WHERE datname = 'scratch';") == "1"
    gone, _ = run(host, model(host, users=users, databases=[*model(host).model_dump()["databases"],
                                                            {"name": "scratch", "state": "absent",
                                                             "confirm_drop": "scratch"}]))
    assert "database scratch: exists, declared absent" in gone.summary()
    assert psql(testhosts, host, "SELECT count(*) FROM pg_database WHERE datname = 'scratch';") == "0"


def test_the_pulumi_form_sql_runs_twice_and_leaves_nothing_for_a_run_to_do(testhosts):
    """Pulumi declares the SQL ahead of time (every statement guarded or idempotent): it must run on a real
    server, again without error, and leave the catalog as a run would make it."""
    from polyvm.recipes.postgres.recipe import RolesStep

    (host,) = testhosts.up(fresh=True)
    full = model(host, users=[*model(host).model_dump()["users"], {"name": "legacy", "state": "absent"}])
    run(host, parse_inputs({"allowed_cidrs": [f"{host.record.host_ip}/32"], "memory_mb": 512,
                            "databases": [], "users": [],
                            "settings": {"shared_preload_libraries": "pg_stat_statements"}}))
    passwords = {"app": APP_PW, "report": RO_PW, "ops": "ops-password-0123456789"}
    full = full.with_passwords(passwords)
    declared = RolesStep("roles and databases", full).declared()
    sql = declared.stdin if isinstance(declared.stdin, str) else declared.stdin.decode()
    for _ in range(2):
        r = testhosts.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                  "-d", "postgres", "-f", "-"], input=sql, check=False)
        assert r.returncode == 0, r.stderr
    with connect(host) as conn:
        step = RolesStep("roles and databases", full).apply(conn)
    assert not step.changed, step.detail
    with login(host, "report", RO_PW) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "report"


def test_a_cert_pg_hba_entry_needs_a_client_certificate_from_the_ca(testhosts, tmp_path):
    import subprocess

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path, timeout=60)

    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=polyvm test client CA", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=report", "-keyout", "report.key", "-out", "report.csr")
    openssl("x509", "-req", "-in", "report.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-out", "report.crt")
    (tmp_path / "report.key").chmod(0o600)

    (host,) = testhosts.up(fresh=True)
    ca = "/etc/postgresql/client-ca.crt"
    testhosts.exec(host, f"install -D -m 0644 /dev/stdin {ca}", input=(tmp_path / "ca.crt").read_text())
    me = f"{host.record.host_ip}/32"
    inputs = model(host, client_ca_file=ca, hba=[{"address": me, "user": "report", "method": "cert"}])
    run(host, inputs)

    with psycopg.connect(host=host.address, port=5432, user="report", dbname="app", sslmode="require",
                         sslcert=str(tmp_path / "report.crt"), sslkey=str(tmp_path / "report.key"),
                         connect_timeout=10) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "report"
    # The password alone no longer lets report in from this network: the certificate is required.
    with pytest.raises(psycopg.OperationalError, match="certificate"):
        login(host, "report", RO_PW)
    # Others still log in with scram-sha-256.
    with login(host, "app", APP_PW) as c:
        assert c.execute("SELECT 1").fetchone()[0] == 1
