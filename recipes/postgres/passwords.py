"""Generated passwords for the CLI form: kept in a 0600 JSON file next to the user's inputs.

The file maps user name -> password. It is created with mode 0600 (never wider, also not for an
instant) and re-read on later runs, so a generated password stays the same across runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from polyvm.errors import ConfigError

from .inputs import PostgresInputs, generate_password


def load_passwords(path: str | os.PathLike[str]) -> dict[str, str]:
    p = Path(path)
    if not p.exists():
        return {}
    mode = p.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{p} holds passwords and must not be readable by others (chmod 600 {p})")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read password file {p}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"{p}: expected a JSON object of user name -> password")
    return data


def save_passwords(path: str | os.PathLike[str], passwords: dict[str, str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(passwords, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def ensure_passwords(inputs: PostgresInputs, path: str | os.PathLike[str]) -> tuple[PostgresInputs, list[str]]:
    """Inputs where every user has a password: given ones are kept, missing ones come from the 0600
    file at ``path`` or are generated and added to it. Returns (inputs, names generated now)."""
    missing = inputs.missing_passwords()
    if not missing:
        return inputs, []
    stored = load_passwords(path)
    generated = [n for n in missing if n not in stored]
    if generated:
        stored.update({n: generate_password() for n in generated})
        save_passwords(path, stored)
    return inputs.with_passwords(stored), generated
