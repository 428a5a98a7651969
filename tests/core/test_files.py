"""core/files.py: the checks polyvm makes before writing a state file."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyvm.errors import ConfigError
from polyvm.files import file_path


def test_missing_last_directory_is_made_0700(tmp_path):
    p = file_path(tmp_path / "sandbox" / "passwords.json", what="password file", make_parent=True)
    assert p.parent.is_dir() and (p.parent.stat().st_mode & 0o777) == 0o700


def test_a_directory_made_by_another_run_between_the_checks_is_accepted(tmp_path, monkeypatch):
    """Two runs starting at once: the other run creates the directory right after this one looked. A CI run
    saw "sandbox is not a directory" for exactly this (look, then make, then look again)."""
    target = tmp_path / "sandbox"
    real_is_dir = Path.is_dir
    raced = []

    def is_dir(self):  # noqa: ANN001, ANN202 - the other process wins the race on the first look
        answer = real_is_dir(self)
        if self == target and not raced:
            raced.append(True)
            target.mkdir()
        return answer

    monkeypatch.setattr(Path, "is_dir", is_dir)
    p = file_path(target / "passwords.json", what="password file", make_parent=True)
    assert raced and p == target / "passwords.json"


def test_a_file_where_the_directory_should_be_is_refused(tmp_path):
    (tmp_path / "sandbox").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        file_path(tmp_path / "sandbox" / "passwords.json", what="password file", make_parent=True)


def test_deeper_missing_directories_are_never_made(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        file_path(tmp_path / "a" / "b" / "passwords.json", what="password file", make_parent=True)
    assert not (tmp_path / "a").exists()


def test_without_make_parent_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        file_path(tmp_path / "sandbox" / "passwords.json", what="password file")
    assert not (tmp_path / "sandbox").exists()


def test_the_path_itself_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        file_path(tmp_path, what="password file")
