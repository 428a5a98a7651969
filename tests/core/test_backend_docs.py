"""docs/backends.md is generated from the backends' declarations; this fails when it drifts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from polyvm.backend_docs import backends_markdown, builtin_backends
from polyvm.plugins import DEFAULT_PLUGINS, Plugins

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends.md"
REGENERATE = "python -m polyvm.backend_docs > docs/backends.md"


def test_docs_backends_md_matches_the_registered_backends():
    want = backends_markdown(builtin_backends())
    assert DOC.read_text(encoding="utf-8") == want, f"docs/backends.md is stale; regenerate: {REGENERATE}"


def test_every_builtin_backend_loads_and_is_documented():
    plugins = Plugins(entry_point_group=None)
    backends = plugins.backends()
    assert not plugins.failed, f"built-in plugins failed to load: {plugins.failed}"
    builtin = {m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS if m.startswith("polyvm.backends.")}
    assert builtin <= set(backends)
    text = DOC.read_text(encoding="utf-8")
    matrix_header = next(line for line in text.splitlines() if line.startswith("| feature |"))
    for name in backends:
        assert f"## {name}\n" in text
        assert f" {name} |" in matrix_header


def test_a_changed_declaration_changes_the_doc():
    backends = dict(builtin_backends())
    aws = backends["aws"]
    changed = type("ChangedAws", (type(aws),), {"capabilities": dataclasses.replace(aws.capabilities, max_data_disks=3)})()
    assert backends_markdown({**backends, "aws": changed}) != backends_markdown(backends)


def test_a_third_party_backend_gets_a_section_and_a_column():
    backends = dict(builtin_backends())
    aws = backends["aws"]
    extra = type("FakeCloud", (type(aws),), {"name": "fakecloud", "description": "A fake cloud"})()
    text = backends_markdown({**backends, "fakecloud": extra})
    matrix_header = next(line for line in text.splitlines() if line.startswith("| feature |"))
    assert "## fakecloud\n" in text and " fakecloud |" in matrix_header


def test_module_entry_point_prints_the_doc():
    out = subprocess.run([sys.executable, "-m", "polyvm.backend_docs"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == DOC.read_text(encoding="utf-8")
