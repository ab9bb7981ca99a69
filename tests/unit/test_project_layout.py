"""The project's own conventions, checked: every module documents itself, every role has its argument
specs, README and Molecule scenario, every playbook parses, and test files have unique names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
PLAYBOOKS = [*sorted((REPO / "playbooks").glob("*.yml")), REPO / "backup.yml", REPO / "restore.yml"]
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}


def test_test_file_names_are_unique():
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_specs_readme_and_molecule(role):
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    options = {}
    for entry in specs.values():
        for name, spec in (entry.get("options") or {}).items():
            assert spec.get("description"), f"{role.name}: {name} has no description"
            assert spec.get("type"), f"{role.name}: {name} has no type"
            options[name] = spec
    for name in defaults:
        if not name.startswith("__"):
            assert name in options, f"{role.name}: default {name} is not in meta/argument_specs.yml"
            assert name.startswith(f"{role.name}_"), f"{role.name}: input {name} lacks the role's prefix"
    readme = (role / "README.md").read_text()
    for name in options:
        assert name in readme, f"{role.name}: README does not mention {name}"
    assert (role / "molecule" / "default" / "molecule.yml").is_file(), f"{role.name}: no Molecule scenario"
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text())
    assert meta["dependencies"] == [] and meta["galaxy_info"]["namespace"] == "pgdr"


def test_every_playbook_parses():
    for playbook in PLAYBOOKS:
        result = subprocess.run(
            [BIN / "ansible-playbook", "--syntax-check", str(playbook)],
            capture_output=True,
            text=True,
            env=ENV,
            check=False,
        )
        assert result.returncode == 0, f"{playbook.name}: {result.stderr[-1000:]}"
