"""`polyvm postgres --check` on a real host: a clean server reports nothing; each kind of drift planted by hand
is reported; the check itself changes nothing (start time, configuration files, catalog) and opens one exec
channel."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from polyvm.host import Host
from polyvm.recipes.postgres import apply_postgres, parse_inputs
from polyvm.recipes.postgres.recipe import PostgresRecipe
from polyvm.spec import IngressRule

from pg_e2e import connect

pytestmark = pytest.mark.e2e

APP_PW = "app-password-0123456789"
CONF = "/etc/postgresql/15/main"


def inputs_data(host):
    return {"allowed_cidrs": [f"{host.record.host_ip}/32"], "memory_mb": 512,
            "users": [{"name": "app", "password": APP_PW}, {"name": "readers", "login": False}],
            "databases": [{"name": "app", "extensions": ["pgcrypto"]}],
            "grants": [{"role": "readers", "database": "app", "database_privileges": ["CONNECT"],
                        "schema_privileges": ["USAGE"], "table_privileges": ["SELECT"]}]}


def vm(host, inputs):
    return Host(address=host.address, user=host.user, host_key=host.host_key,
                firewall=(inputs.ingress_rule(), IngressRule(port=22, cidrs=[f"{host.record.host_ip}/32"],
                                                                description="ssh")))


def psql(testhosts, host, sql, db="postgres"):
    return testhosts.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-XAt", "-d", db, "-f", "-"],
                          input=sql).stdout.strip()


def untouched(testhosts, host):
    """What a check must leave as it is: start time, the configuration files, the catalog."""
    files = testhosts.exec(host, f"sha256sum {CONF}/*.conf {CONF}/conf.d/* /etc/polyvm/firewall.nft "
                                 "/var/lib/postgresql/15/main/postgresql.auto.conf").stdout
    catalog = psql(testhosts, host, "SELECT pg_postmaster_start_time(); "
                                    "SELECT rolname, rolsuper, rolcanlogin, rolpassword FROM pg_authid ORDER BY 1; "
                                    "SELECT datname, datdba, datacl FROM pg_database ORDER BY 1; "
                                    "SELECT * FROM pg_hba_file_rules; SELECT * FROM pg_file_settings;")
    ruleset = testhosts.exec(host, "nft list ruleset").stdout
    return files, catalog, ruleset


def check(host, inputs):
    with connect(host) as conn:
        drift = PostgresRecipe().drift(inputs, vm(host, inputs), conn)
        return drift, conn.stats.channels


def test_clean_host_reports_nothing_and_every_planted_drift_is_reported(testhosts):
    (host,) = testhosts.up(fresh=True)
    inputs = parse_inputs(inputs_data(host))
    with connect(host) as conn:
        apply_postgres(conn, inputs, host=vm(host, inputs))

    before = untouched(testhosts, host)
    drift, channels = check(host, inputs)
    assert drift == [], drift
    assert channels == 1
    assert untouched(testhosts, host) == before

    # Plant one of each.
    psql(testhosts, host, "CREATE ROLE rogue SUPERUSER LOGIN; ALTER SYSTEM SET work_mem = '77MB'; "
                          "ALTER DATABASE app OWNER TO rogue;")
    psql(testhosts, host, "DROP EXTENSION pgcrypto;", "app")
    testhosts.exec(host, f"echo 'host all all 0.0.0.0/0 trust' >>{CONF}/pg_hba.conf; "
                         f"chmod 0644 {CONF}/postgresql.conf; "
                         "nft add rule inet polyvm input tcp dport 9999 accept")
    before = untouched(testhosts, host)
    drift, channels = check(host, inputs)
    lines = [f"{d.kind}: {d.what}" for d in drift]
    text = "\n".join(lines)
    assert "role: role rogue: a superuser polyvm does not declare" in lines, text
    assert any(x.startswith("pg_hba: ") and "trust" in x for x in lines), text
    assert "setting: work_mem = 77MB set by ALTER SYSTEM (postgresql.auto.conf)" in lines, text
    assert "database: database app: owner is rogue, want app" in lines, text
    assert "extension: database app: extension pgcrypto missing" in lines, text
    assert f"file: {CONF}/postgresql.conf: mode 644 lets every local user read it" in lines, text
    assert any(x.startswith("firewall: the loaded nftables table") for x in lines), text
    fw = next(d for d in drift if d.kind == "firewall")
    assert "9999" in fw.diff
    assert channels == 1
    assert untouched(testhosts, host) == before

    # The command line: exit 1 with the list (JSON), 0 once a run has put everything back.
    from polyvm.cli import build_cli

    main = build_cli()
    tmp = None
    args = ["postgres", "--check", "--json", "-H", f"{host.user}@{host.address}", "-k", host.private_key_path,
            "--host-key", host.host_key, "--allow", f"{host.record.host_ip}/32", "--memory-mb", "512",
            "--guest-firewall", "--ssh-cidr", f"{host.record.host_ip}/32"]
    runner = CliRunner()
    res = runner.invoke(main, args + ["--inputs", _inputs_file(host, tmp)], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    text_res = runner.invoke(main, [a for a in args if a != "--json"] + ["--diff", "--inputs", _inputs_file(host, tmp)])
    assert text_res.exit_code == 1 and "+++ table inet polyvm (polyvm)" in text_res.output, text_res.output
    out = json.loads(res.stdout)
    (only,) = out["hosts"].values()
    kinds = {d["kind"] for d in only["drift"]}
    assert {"role", "pg_hba", "setting", "database", "extension", "file", "firewall"} <= kinds

    psql(testhosts, host, "ALTER SYSTEM RESET work_mem; ALTER DATABASE app OWNER TO app; DROP ROLE rogue;")
    # (the guest baseline re-loads its ruleset only when the rules file changed: put the table back by hand)
    testhosts.exec(host, f"chmod 0640 {CONF}/postgresql.conf; nft -f /etc/polyvm/firewall.nft")
    with connect(host) as conn:
        apply_postgres(conn, inputs, host=vm(host, inputs))
    res = runner.invoke(main, args + ["--inputs", _inputs_file(host, tmp)], catch_exceptions=False)
    assert res.exit_code == 0, res.output


def _inputs_file(host, tmp) -> str:
    import tempfile

    import yaml

    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=tmp)
    data = inputs_data(host)
    del data["allowed_cidrs"], data["memory_mb"]
    yaml.safe_dump(data, f)
    f.close()
    return f.name


def test_verify_on_a_stack_file_needs_no_recipe_flags(testhosts, tmp_path):
    """`polyvm verify --spec Pulumi.<stack>.yaml`: the recipe and its inputs come from the stack's
    polyvm:postgres, as `pulumi up` would apply them; exit 0 on the server it describes, 1 once it drifts."""
    import yaml

    from polyvm.cli import build_cli

    (host,) = testhosts.up(fresh=True)
    data = inputs_data(host)
    with connect(host) as conn:
        apply_postgres(conn, parse_inputs(data), host=Host(address=host.address, user=host.user,
                                                           host_key=host.host_key))
    spec = {"name": "db1", "size": "small", "image": {"family": "debian", "version": "12"},
            "ssh": {"public_key": testhosts.key.public_key},
            "ingress": [{"port": 22, "cidrs": ["198.19.0.0/16"]}, {"port": 5432, "cidrs": ["198.19.0.0/16"]}]}
    stack = tmp_path / "Pulumi.dev.yaml"
    stack.write_text(yaml.safe_dump({"config": {"polyvm:backend": "local", "polyvm:vm": spec,
                                                "polyvm:postgres": data}}))
    args = ["verify", "-H", f"{host.user}@{host.address}", "-k", str(host.private_key_path),
            "--host-key", host.host_key, "--spec", str(stack)]
    runner = CliRunner()
    clean = runner.invoke(build_cli(), args)
    assert clean.exit_code == 0, clean.output
    psql(testhosts, host, "CREATE ROLE rogue SUPERUSER LOGIN;")
    drifted = runner.invoke(build_cli(), args)
    assert drifted.exit_code == 1 and "rogue" in drifted.output, drifted.output
