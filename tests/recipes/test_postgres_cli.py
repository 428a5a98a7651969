"""``polyvm postgres`` without hosts: registration, option handling, errors as one line."""

from __future__ import annotations

from click.testing import CliRunner

from polyvm.cli import build_cli
from polyvm.recipes.postgres.cli import gather_inputs


def test_command_is_registered_through_the_hook():
    r = CliRunner().invoke(build_cli(), ["postgres", "--help"])
    assert r.exit_code == 0 and "--allow" in r.output and "--password-file" in r.output


def test_options_override_the_inputs_file(tmp_path):
    f = tmp_path / "in.yaml"
    f.write_text("allowed_cidrs: [10.0.0.0/8]\nusers: [{name: app, password: from-the-file-123}]\n"
                 "settings: {work_mem: 4MB}\n")
    data = gather_inputs(str(f), {"allowed_cidrs": ("192.0.2.0/24",), "db_users": ("app", "ro"),
                                  "databases": ("app", "reports:ro"), "settings": ("work_mem=16MB", "jit=off",
                                                                                   "max_connections=50"),
                                  "port": 6432})
    assert data["allowed_cidrs"] == ["192.0.2.0/24"] and data["port"] == 6432
    assert data["users"] == [{"name": "app", "password": "from-the-file-123"}, {"name": "ro"}]
    assert data["databases"] == [{"name": "app"}, {"name": "reports", "owner": "ro"}]
    assert data["settings"] == {"work_mem": "16MB", "jit": False, "max_connections": 50}


def test_missing_allowed_cidrs_is_one_line_and_exit_2(tmp_path):
    r = CliRunner().invoke(build_cli(), ["postgres", "-H", "192.0.2.1", "--db-user", "app",
                                         "--password-file", str(tmp_path / "pw.json")])
    assert r.exit_code == 2 and "allowed_cidrs: is required" in r.output
    assert not (tmp_path / "pw.json").exists()


def test_docs_cover_every_option_and_input_field():
    from pathlib import Path

    from polyvm.recipes.postgres import PostgresInputs
    from polyvm.recipes.postgres.cli import postgres_cmd

    doc = (Path(__file__).resolve().parents[2] / "docs" / "postgres.md").read_text(encoding="utf-8")
    for param in postgres_cmd.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt in doc, f"{opt} is not in docs/postgres.md"
    for field in PostgresInputs.model_fields:
        assert f"`{field}`" in doc, f"input {field} is not in docs/postgres.md"
