"""drift_of (pure): the check script's sections compared with what the recipe would write."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner

from polyvm.host import Facts, Host
from polyvm.recipes.postgres import parse_inputs
from polyvm.recipes.postgres.drift import candidate_layouts, check_script, drift_of
from polyvm.recipes.postgres.platform import layout_for
from polyvm.recipes.postgres.render import render_pg_hba, render_postgresql_conf

HOST = Host(address="198.51.100.7", user="admin", facts=Facts("debian", "12", memory_mb=1024))
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


def _inputs():
    return parse_inputs({"allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app", "password": "p" * 16}],
                         "databases": [{"name": "app"}]})


def _output(inputs, *, hba=None, stat=None, tls="Dec  1 00:00:00 2036 GMT", catalog=None):
    lay = layout_for("debian", "12")
    roles = [{"name": "postgres", "superuser": True, "login": True}]
    cat = catalog if catalog is not None else (
        "roles\t" + json.dumps([{**r, "createdb": False, "createrole": False, "replication": False,
                                 "connection_limit": -1, "valid_until": None, "member_of": [], "owns": {},
                                 "acl_dbs": []} for r in roles]) + "\ndatabases\t[]\n")
    return "\n".join([
        "@@polyvm:facts", "ID=debian", 'VERSION_ID="12"', "@@polyvm@@", str(1024 * 1024),
        "@@polyvm:layout", "0",
        "@@polyvm:dropin", render_postgresql_conf(inputs, lay, memory_mb=1024),
        "@@polyvm:hba", hba if hba is not None else render_pg_hba(inputs, lay),
        "@@polyvm:stat", stat if stat is not None else f"{lay.dropin_path}|postgres|postgres|640|regular file",
        "@@polyvm:tls", tls,
        "@@polyvm:catalog", cat,
    ])


def test_matching_files_report_no_file_drift_and_the_catalog_is_compared():
    drift = drift_of(_inputs(), HOST, _output(_inputs()), now=NOW)
    assert [d.what for d in drift] == ["role app: missing", "role app: set password", "database app: missing"]


def test_a_trust_line_world_readable_key_and_expiring_certificate_are_drift():
    inputs = _inputs()
    hba = render_pg_hba(inputs, layout_for("debian", "12")) + "host all all 0.0.0.0/0 trust\n"
    key = "/etc/postgresql/15/main/server.key|postgres|postgres|644|regular file"
    data = "/var/lib/postgresql/15/main|postgres|postgres|750|directory"
    drift = drift_of(inputs, HOST, _output(inputs, hba=hba, stat=f"{key}\n{data}", tls="Dec 20 00:00:00 2026 GMT"),
                     now=NOW)
    by = {d.kind: d for d in drift}
    assert by["pg_hba"].what.endswith("extra line 'host all all 0.0.0.0/0 trust'")
    assert "+++ /etc/postgresql/15/main/pg_hba.conf (polyvm)" in by["pg_hba"].diff
    files = [d.what for d in drift if d.kind == "file"]
    assert files == ["/etc/postgresql/15/main/server.key: mode 644 lets every local user read it",
                     "/var/lib/postgresql/15/main: mode 750, want 700"]
    assert by["tls"].what == "server certificate expires 2026-12-20 (in 19 days; warning window 30 days)"
    assert not [d for d in drift_of(inputs, HOST, _output(inputs, tls="Dec 20 00:00:00 2026 GMT"), now=NOW,
                                    tls_days=10) if d.kind == "tls"]


def test_a_host_without_the_recipe_and_a_server_that_does_not_answer():
    assert [d.what for d in drift_of(_inputs(), HOST, "@@polyvm:layout\n\n")] == [
        "no polyvm-managed PostgreSQL here (no recipe drop-in in any known place)"]
    drift = drift_of(_inputs(), HOST, _output(_inputs(), catalog="psql: error: connection refused"), now=NOW)
    assert [d.what for d in drift] == ["PostgreSQL does not answer: psql: error: connection refused"]


def test_check_script_holds_no_secret_and_tries_every_known_layout_when_the_os_is_unknown():
    inputs = _inputs()
    unknown = Host(address="198.51.100.7", user="admin")
    script = check_script(inputs, unknown, candidate_layouts(inputs, unknown))
    assert "p" * 16 not in script
    assert "/etc/postgresql/15/main/conf.d/50-polyvm.conf" in script and "/var/lib/pgsql/data" in script
    assert "nft" not in script  # no guest firewall: nothing of it is read


def test_cli_bad_input_exits_2():
    from polyvm.cli import build_cli

    cli = build_cli()
    r = CliRunner().invoke(cli, ["postgres", "--diff", "-H", "a@192.0.2.1", "--allow", "10.0.0.0/8"])
    assert r.exit_code == 2 and "--diff goes with --check" in r.output
    r = CliRunner().invoke(cli, ["verify", "--recipe", "nginx", "-H", "a@192.0.2.1"])
    assert r.exit_code == 2 and "recipe 'nginx' has no drift check" in r.output
    r = CliRunner().invoke(cli, ["postgres", "--check", "-H", "a@192.0.2.1", "--allow", "0.0.0.0/0"])
    assert r.exit_code == 2 and "opens PostgreSQL to the world" in r.output
