"""The settings input cannot bypass what the recipe guarantees: no include directives, nothing that runs a
command or loads code from a path, TLS left to the recipe; each refused with one line naming the setting."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from polyvm.cli import build_cli
from polyvm.errors import SpecError
from polyvm.recipes.postgres import parse_inputs

BASE = {"allowed_cidrs": ["10.0.0.0/8"]}


def refused(settings: dict) -> str:
    with pytest.raises(SpecError) as ei:
        parse_inputs({**BASE, "settings": settings})
    return str(ei.value)


@pytest.mark.parametrize("name", ["include", "include_dir", "include_if_exists"])
def test_include_directives_are_refused(name):
    msg = refused({name: "/tmp/evil.conf"})
    assert f"'{name}' cannot be set here" in msg and "another configuration file" in msg


@pytest.mark.parametrize("name", ["archive_command", "archive_library", "archive_mode", "restore_command",
                                  "archive_cleanup_command", "recovery_end_command", "ssl_passphrase_command",
                                  "ssl_passphrase_command_supports_reload", "dynamic_library_path"])
def test_settings_that_run_commands_or_load_code_are_refused(name):
    assert f"'{name}' cannot be set here" in refused({name: "touch /tmp/pwned"})


@pytest.mark.parametrize("name", ["ssl_ciphers", "ssl_ca_file", "ssl_dh_params_file", "ssl_max_protocol_version"])
def test_tls_is_left_to_the_recipe(name):
    assert f"'{name}' cannot be set here (TLS is managed by the recipe)" in refused({name: "x"})


def test_tls_minimum_can_only_be_raised():
    assert "must be one of TLSv1.2, TLSv1.3" in refused({"ssl_min_protocol_version": "TLSv1"})
    ok = parse_inputs({**BASE, "settings": {"ssl_min_protocol_version": "TLSv1.3"}})
    assert ok.settings["ssl_min_protocol_version"] == "TLSv1.3"


@pytest.mark.parametrize("name", ["shared_preload_libraries", "session_preload_libraries",
                                  "local_preload_libraries", "jit_provider"])
def test_libraries_by_name_only(name):
    parse_inputs({**BASE, "settings": {name: "pg_stat_statements, auto_explain"}})
    msg = refused({name: "pg_stat_statements,/tmp/evil.so"})
    assert f"'{name}': '/tmp/evil.so' is not a plain library name" in msg
    assert "is not a plain library name" in refused({name: "$libdir/plugins/x"})


def test_every_problem_at_once_and_ordinary_settings_pass():
    msg = refused({"include": "/x", "archive_command": "cp %p /x", "work_mem": "8MB"})
    assert "'include'" in msg and "'archive_command'" in msg and "work_mem" not in msg
    assert parse_inputs({**BASE, "settings": {"work_mem": "8MB", "log_statement": "ddl"}}).settings


@pytest.mark.parametrize("setting", ["include=/tmp/x.conf", "archive_command=cp %p /tmp/%f",
                                     "ssl_passphrase_command=/bin/echo pw"])
def test_cli_refuses_with_one_line_and_exit_2_before_connecting(setting):
    # 192.0.2.1 (TEST-NET-1) is never contacted: the inputs are refused first.
    r = CliRunner().invoke(build_cli(), ["postgres", "-H", "192.0.2.1", "--allow", "10.0.0.0/8",
                                         "--set", setting])
    name = setting.split("=")[0]
    assert r.exit_code == 2, r.output
    # One line names the setting (the CLI's general error header is not this test's business).
    assert len([line for line in r.output.splitlines() if f"'{name}' cannot be set here" in line]) == 1
    assert "Traceback" not in r.output
