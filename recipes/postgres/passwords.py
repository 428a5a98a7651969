"""Generated passwords for the CLI form: kept in a 0600 JSON file next to the user's inputs.

The file maps user name -> password. It is created with mode 0600 (never wider, also not for an
instant) and re-read on later runs, so a generated password stays the same across runs. Runs at the same
time share it safely: the read-generate-write happens under a lock (``<file>.lock`` next to it) and the
file is replaced in one step, so no run loses another's password or sees a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from polyvm.errors import ConfigError
from polyvm.files import atomic_write, file_path, locked, read_text

from .inputs import PostgresInputs, generate_password


def load_passwords(path: str | os.PathLike[str]) -> dict[str, str]:
    p = Path(path)
    if not p.exists():
        return {}
    mode = p.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{p} holds passwords and must not be readable by others (chmod 600 {p})")
    try:
        data = json.loads(read_text(p, what="password file"))
    except ValueError as exc:
        raise ConfigError(f"password file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"{p}: expected a JSON object of user name -> password")
    return data


def save_passwords(path: str | os.PathLike[str], passwords: dict[str, str]) -> None:
    file_path(path, what="password file", make_parent=True)
    atomic_write(path, json.dumps(passwords, indent=2, sort_keys=True) + "\n", mode=0o600)


def ensure_passwords(inputs: PostgresInputs, path: str | os.PathLike[str]) -> tuple[PostgresInputs, list[str]]:
    """Inputs where every user has a password: given ones are kept, missing ones come from the 0600
    file at ``path`` or are generated and added to it (under its lock: concurrent runs agree on one
    password per user). Returns (inputs, names generated now)."""
    missing = inputs.missing_passwords()
    if not missing:
        return inputs, []
    stored = load_passwords(path)
    if all(n in stored for n in missing):
        return inputs.with_passwords(stored), []
    p = file_path(path, what="password file", make_parent=True)
    try:
        with locked(p.with_name(p.name + ".lock"), what=f"password file {p}"):
            stored = load_passwords(path)  # again: another run may have added some meanwhile
            generated = [n for n in missing if n not in stored]
            if generated:
                stored.update({n: generate_password() for n in generated})
                save_passwords(path, stored)
    except PermissionError as exc:
        raise ConfigError(f"password file {p}: {exc.strerror}") from None
    return inputs.with_passwords(stored), generated
