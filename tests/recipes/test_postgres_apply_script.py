"""The server script (start, reload, restart with roll-back) renders to valid POSIX sh on every OS family.
Its behaviour is tested on real hosts in tests/e2e/test_postgres.py; this covers the families that have no
real host here."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from polyvm.recipes.postgres import layout_for, parse_inputs
from polyvm.recipes.postgres.render import render_apply_script

FAMILIES = [("debian", "12"), ("ubuntu", "22.04"), ("ubuntu", "24.04"), ("rhel", "9"), ("amazon-linux", "2023")]


@pytest.mark.parametrize("family,version", FAMILIES)
def test_apply_script_is_valid_sh_and_rolls_back(family, version):
    shell = shutil.which("dash") or shutil.which("sh")
    inputs = parse_inputs({"allowed_cidrs": ["10.0.0.0/8"]})
    script = render_apply_script(inputs, layout_for(family, version))
    r = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # Every start goes through the roll-back, and a restart is checked before the server is stopped.
    assert script.count("start_or_roll_back start") == 1 and script.count("start_or_roll_back restart") == 1
    assert script.index("problem=$(restart_problem)") < script.index("start_or_roll_back restart")
