"""A client can verify the server: the recipe's CA signs a certificate naming the host's addresses, and
psql and psycopg connect at sslmode=verify-full with the recipe's DSN, the CA file and a pgpass file."""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import parse_qs, urlparse

import pytest

from polyvm.host import Host
from polyvm.provisioners.connection import Connection
from polyvm.recipes.postgres import apply_postgres, parse_inputs
from polyvm.recipes.postgres.recipe import PostgresRecipe

psycopg = pytest.importorskip("psycopg", reason="psycopg is needed for client-side logins")

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"


def _setup(testhosts, tmp_path):
    (host,) = testhosts.up(fresh=True)
    inputs = parse_inputs({"allowed_cidrs": [f"{host.record.host_ip}/32"], "users": [{"name": "app", "password": PASSWORD}],
                           "databases": [{"name": "app"}], "memory_mb": 512})
    vm = Host(address=host.address, user=host.user, host_key=host.host_key)
    with Connection(host.address, host.user, private_key_path=host.private_key_path, host_key=host.host_key,
                    deadline=60) as conn:
        apply_postgres(conn, inputs, host=vm)
    outputs = PostgresRecipe().outputs(inputs, vm)
    # The CA certificate, fetched from the host as a client would (it is public; its key stays there).
    ca = tmp_path / "ca.crt"
    ca.write_text(testhosts.exec(host, ["cat", outputs["ca_certificate"]]).stdout)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(outputs["pgpass"].replace(":*", ":" + PASSWORD) + "\n")
    pgpass.chmod(0o600)
    return host, inputs, outputs, ca, pgpass


def test_verify_full_with_psycopg_and_psql(testhosts, tmp_path):
    host, _inputs, outputs, ca, pgpass = _setup(testhosts, tmp_path)
    dsn = outputs["dsn"]
    url = urlparse(dsn)
    assert url.hostname == host.address and parse_qs(url.query) == {"sslmode": ["verify-full"], "sslrootcert": ["ca.crt"]}
    # The DSN as printed, run from the directory holding ca.crt, with the password from the pgpass file.
    env = {**os.environ, "PGPASSFILE": str(pgpass)}
    env.pop("PGPASSWORD", None)
    with psycopg.connect(dsn.replace("sslrootcert=ca.crt", f"sslrootcert={ca}"), passfile=str(pgpass),
                         connect_timeout=10) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("app",)
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed (apt-get install -y postgresql-client)")
    r = subprocess.run([psql, dsn, "-XAtc", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "t"


def test_verify_full_refuses_a_name_the_certificate_does_not_hold_and_a_foreign_ca(testhosts, tmp_path):
    host, _inputs, outputs, ca, pgpass = _setup(testhosts, tmp_path)
    # The certificate names the host's address (an IP SAN), not arbitrary names: a client connecting by
    # a name the certificate lacks is refused at verify-full, while the IP works.
    with pytest.raises(psycopg.OperationalError, match="does not match|certificate"):
        psycopg.connect(host="db.invalid", hostaddr=host.address, port=5432, user="app", dbname="app",
                        password=PASSWORD, sslmode="verify-full", sslrootcert=str(ca), connect_timeout=10).close()
    # Another server's CA does not verify this one.
    other = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=other", "-days", "1", "-keyout", str(tmp_path / "k"), "-out", str(other)],
                   check=True, capture_output=True, timeout=60)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed|verify"):
        psycopg.connect(host=host.address, port=5432, user="app", dbname="app", password=PASSWORD,
                        sslmode="verify-full", sslrootcert=str(other), connect_timeout=10).close()


def test_certificate_names_the_hosts_addresses_and_survives_a_rerun(testhosts, tmp_path):
    host, inputs, _outputs, ca, _pgpass = _setup(testhosts, tmp_path)
    text = testhosts.exec(host, ["openssl", "x509", "-in", "/etc/postgresql/15/main/server.crt", "-noout", "-text"]).stdout
    assert f"IP Address:{host.address}" in text and "IP Address:127.0.0.1" in text
    assert "CA:FALSE" in text
    key_mode = testhosts.exec(host, ["stat", "-c", "%a %U", "/etc/polyvm/postgres/ca.key"]).stdout.split()
    assert key_mode == ["600", "root"]
    serial = testhosts.exec(host, ["openssl", "x509", "-in", "/etc/postgresql/15/main/server.crt", "-noout", "-serial"]).stdout
    vm = Host(address=host.address, user=host.user, host_key=host.host_key)
    with Connection(host.address, host.user, private_key_path=host.private_key_path, host_key=host.host_key,
                    deadline=60) as conn:
        again = apply_postgres(conn, inputs, host=vm)
    assert not again.changed
    assert testhosts.exec(host, ["openssl", "x509", "-in", "/etc/postgresql/15/main/server.crt", "-noout",
                                 "-serial"]).stdout == serial
    assert testhosts.exec(host, ["cat", "/etc/polyvm/postgres/ca.crt"]).stdout == ca.read_text()
