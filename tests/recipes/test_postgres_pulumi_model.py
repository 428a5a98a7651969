"""The full model from Pulumi config (`polyvm:postgres`) through RecipeResource, under Pulumi's mock runtime."""

from __future__ import annotations

import pytest

pulumi = pytest.importorskip("pulumi")
pytest.importorskip("pulumi_random", reason="generated passwords need pulumi-random (polyvm[postgres])")

from polyvm.errors import SpecError  # noqa: E402
from polyvm.plan import run_mocked  # noqa: E402
from polyvm.plugins import get_backend  # noqa: E402
from polyvm.spec import parse_spec  # noqa: E402

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock-key\n-----END OPENSSH PRIVATE KEY-----\n"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT you@laptop"


class RandomMocks:
    mock_outputs = {"random:index/randomPassword:RandomPassword": lambda name, inputs: {"result": f"rnd-{name}-pw"}}
    mock_calls: dict = {}


def spec_data():
    return {"name": "db1", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "24.04"},
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}, {"port": 5432, "cidrs": ["10.0.0.0/8"]}],
            "ssh": {"user": "polyvm", "public_key": PUB}}

MODEL = {
    "users": [{"name": "app", "connection_limit": 30}, {"name": "readers", "login": False},
              {"name": "report", "member_of": ["readers"]}, {"name": "legacy", "state": "absent"}],
    "databases": [{"name": "app", "encoding": "UTF8", "lc_collate": "C.UTF-8", "lc_ctype": "C.UTF-8",
                   "extensions": ["pgcrypto", "pg_stat_statements"]}],
    "grants": [{"role": "readers", "database": "app", "database_privileges": ["CONNECT"],
                "schema_privileges": ["USAGE"], "table_privileges": ["SELECT"]}],
    "hba": [{"address": "10.1.0.0/24", "user": "report", "method": "cert"}],
    "client_ca_file": "/etc/postgresql/client-ca.crt",
}


def _declare(config):
    from polyvm.provisioners.pulumi import provision_vm

    backend = get_backend("aws")
    spec = parse_spec(spec_data())

    def program():
        return provision_vm(spec, backend.declare(spec, {}))

    _, mocks, _ = run_mocked(program, [backend, RandomMocks],
                             config={"polyvm:postgres": config, "polyvm:sshPrivateKey": KEY})
    out = {n: i for _t, n, i, _c, _id in mocks.resources}
    # steps by name without their ordinal (db1-postgres-05-roles-and-databases -> roles-and-databases)
    out.update({n.split("-", 3)[-1]: i for n, i in list(out.items()) if n.startswith("db1-postgres-0")})
    return out


def test_polyvm_postgres_config_declares_the_whole_model():
    by_name = _declare(MODEL)
    assert "db1-postgres-app-password" in by_name and "db1-postgres-report-password" in by_name
    assert "db1-postgres-readers-password" not in by_name  # a NOLOGIN role has none
    sql = by_name["roles-and-databases"]["stdin"]["value"]
    assert "CONNECTION LIMIT 30" in sql and 'GRANT "readers" TO "report"' in sql
    assert "ENCODING %L LC_COLLATE %L LC_CTYPE %L TEMPLATE %I" in sql
    assert 'CREATE EXTENSION IF NOT EXISTS "pg_stat_statements"' in sql
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "readers"' in sql
    assert "RAISE EXCEPTION 'role legacy (state: absent) owns objects" in sql
    conf = by_name["configuration-50-polyvm-conf"]["content"]
    assert "shared_preload_libraries = 'pg_stat_statements'" in conf
    assert "ssl_ca_file = '/etc/postgresql/client-ca.crt'" in conf
    hba = by_name["configuration-pg-hba-conf"]["content"]
    assert "report    10.1.0.0/24              cert clientcert=verify-full" in hba


def test_bad_model_in_pulumi_config_is_one_line_per_problem():
    bad = {**MODEL, "hba": [{"address": "0.0.0.0/0", "method": "md5"}]}
    with pytest.raises(SpecError) as exc:
        _declare(bad)
    assert "'md5' is refused" in str(exc.value)
