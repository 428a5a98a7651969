"""The PostgreSQL model through `polyvm sandbox up --inputs`, and `polyvm sandbox verify` on the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polyvm.backends.local.sandbox import Sandbox

pytestmark = pytest.mark.e2e

MODEL = """
users:
  - {name: app}
  - {name: readers, login: false}
databases:
  - {name: app, extensions: [pgcrypto]}
grants:
  - {role: readers, database: app, database_privileges: [CONNECT], schema_privileges: [USAGE],
     table_privileges: [SELECT]}
"""


def polyvm(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLYVM_LOCAL_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "polyvm.cli", "sandbox", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture
def sandbox_dir(_local_engine, tmp_path):
    state = tmp_path / "sandbox-state"
    yield state
    if state.exists():
        Sandbox(state).down()


def test_sandbox_up_with_the_model_then_verify_clean_and_drifted(sandbox_dir, tmp_path):
    inputs = tmp_path / "inputs.yaml"
    inputs.write_text(MODEL)
    up = polyvm(sandbox_dir, "up", "--inputs", str(inputs), "--json")
    assert up.returncode == 0, up.stderr
    (vm,) = json.loads(up.stdout)["vms"]

    clean = polyvm(sandbox_dir, "verify", "--inputs", str(inputs))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip() == f"{vm['name']}: no drift"

    sql = "CREATE ROLE rogue SUPERUSER LOGIN; REVOKE CONNECT ON DATABASE app FROM readers;"
    planted = polyvm(sandbox_dir, "ssh", vm["name"], f"sudo -n /usr/sbin/runuser -u postgres -- psql -XAt -c '{sql}'")
    assert planted.returncode == 0, planted.stderr
    drifted = polyvm(sandbox_dir, "verify", "--inputs", str(inputs), "--json")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    whats = [d["what"] for d in json.loads(drifted.stdout)["hosts"][vm["name"]]["drift"]]
    assert "role rogue: a superuser polyvm does not declare" in whats
    assert "database app: readers lacks CONNECT" in whats

    bad = polyvm(sandbox_dir, "verify", "--recipe", "nginx")
    assert bad.returncode == 2 and "has no drift check" in bad.stderr
