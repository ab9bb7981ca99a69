"""Each option defined once: a module's DOCUMENTATION (doc fragments resolved) is the source of an option's type,
choices, default and required; every role input that feeds a module option says the same, value by value, in
meta/argument_specs.yml, defaults/main.yml and the role's README.

A role input feeds a module option when a task of the role calls the module with the option set to the plain
mapping ``"{{ role_input }}"``, or to ``"{{ role_input or omit }}"`` / ``"{{ role_input | default(omit) }}"`` (then an
empty role default stands for the module's own default). Each test collects every disagreement and asserts once
with the whole list, so one run shows everything to fix.

Exceptions are in ALLOWED, each with the reason the role documents; nothing else may differ.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAMESPACE = "pgdr.supabase."

# Being reworked on the restore branch; remove when it lands.
RESTORE_PATH_ROLES = frozenset(
    {
        "logical_restore",
        "pitr_restore",
        "supabase_pitr",
        "restore_record",
        "backup_select",
        "new_project",
        "prove",
        "verify_migrations",
        "smoke_tests",
        "env_repoint",
    }
)

# (role, input, check) -> why the role differs from the module on purpose. The role's README says the same.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("backup_notify", "backup_notify_outcome", "choices"): (
        "the role reports backup runs (start, success, failed); the module's fresh and stale are the freshness "
        "checks' outcomes, which the freshness role reports itself"
    ),
    ("backup_notify", "backup_notify_result", "default"): (
        "an empty dict is the role's 'no result yet' (outcome start); the module has no default and reads any dict "
        "as a result, so passing {} keeps the event a start event has always had"
    ),
}

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir() and p.name not in RESTORE_PATH_ROLES)

_PLAIN = re.compile(r"^\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}$")
_OMITTABLE = re.compile(r"^\{\{\s*([a-z_][a-z0-9_]*)\s*(?:or\s+omit|\|\s*default\(\s*omit\s*\))\s*\}\}$")
_MISSING = object()


# ---------------------------------------------------------------------------------------------------------------------
# The sources


def _tasks(items):
    """Every task in a task list, blocks included."""
    for task in items or []:
        if not isinstance(task, dict):
            continue
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def module_calls(role):
    """(module short name, {option: (role input, omittable)}) for each task of the role that calls a module of the
    collection, with the options set by a plain mapping of one variable."""
    calls = []
    for path in sorted((REPO / "roles" / role / "tasks").rglob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            for key, args in task.items():
                if not key.startswith(NAMESPACE) or not isinstance(args, dict):
                    continue
                mapped = {}
                for option, value in args.items():
                    if not isinstance(value, str):
                        continue
                    if match := _PLAIN.match(value.strip()):
                        mapped[option] = (match.group(1), False)
                    elif match := _OMITTABLE.match(value.strip()):
                        mapped[option] = (match.group(1), True)
                calls.append((key[len(NAMESPACE) :], mapped))
    return calls


def role_specs(role):
    """The role's inputs over all its entry points: name -> argument spec (required when an entry point requires
    it; the README then says for which)."""
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = {}
    for entry in specs.values():
        for name, spec in (entry.get("options") or {}).items():
            required = spec.get("required", False) or options.get(name, {}).get("required", False)
            options[name] = {**spec, "required": required}
    return options


def role_defaults(role):
    path = REPO / "roles" / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def readme_inputs(role, extra_vars=None):
    """The rows of the README's input tables (``| Name | Default | Description |``): name -> default cell.

    An entry role's table of the extra vars users type (``| Extra var | Role input | Default | ... |``) counts too:
    its rows go into extra_vars as input -> (extra var, default cell), and into the result as input -> None."""
    rows, columns = {}, None
    for line in (REPO / "roles" / role / "README.md").read_text().splitlines():
        if re.match(r"^\|\s*Name\s*\|\s*Default\s*\|", line):
            columns = "inputs"
            continue
        if re.match(r"^\|\s*Extra var\s*\|\s*Role input\s*\|\s*Default\s*\|", line):
            columns = "extra vars"
            continue
        if columns is None or not line.startswith("|"):
            columns = None
            continue
        if re.match(r"^\|[-\s|:]+\|$", line):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if columns == "extra vars":
            extra, name = (re.findall(r"`([a-z_][a-z0-9_]*)`", cell) for cell in cells[:2])
            if extra and name:
                rows[name[0]] = None
                if extra_vars is not None:
                    extra_vars[name[0]] = (extra[0], cells[2])
            continue
        for name in re.findall(r"`([a-z_][a-z0-9_]*)`", cells[0]):
            rows[name] = cells[1]
    return rows


def _extra_var_problems(name, extra, cell, spec, defaults):
    """An input that defaults to the extra var users type: defaults/main.yml reads that extra var (``restore_backup:
    "{{ backup | default('latest') }}"``) falling back to the default argument_specs and the README give."""
    problems = []
    value = defaults.get(name)
    if extra != name:
        if not isinstance(value, str) or not re.match(rf"^\{{\{{\s*{extra}\b", value):
            problems.append(f"{name}: the README says it is the extra var {extra}, defaults/main.yml has {value!r}")
        else:
            # A plain fallback (default('latest'), default(false)); an expression is not compared.
            fallback = re.search(r"\|\s*default\(('[^']*'|\w+)\)\s*\}\}$", value)
            plain = fallback and not spec.get("required")
            if plain and not _same(yaml.safe_load(fallback.group(1)), spec.get("default")):
                problems.append(
                    f"{name}: {value} falls back to {fallback.group(1)}, argument_specs {spec.get('default')!r}"
                )
    readme = _readme_default(cell)
    if spec.get("required"):
        if readme is not _MISSING:
            problems.append(f"{name}: required in argument_specs, the README says {cell}")
    elif readme is _MISSING:
        problems.append(f"{name}: the README says required, argument_specs does not")
    elif re.fullmatch(r"`[^`]*`", cell) and not _same(readme, spec.get("default")):
        problems.append(f"{name}: README default {cell}, argument_specs {spec.get('default')!r}")
    return problems


@pytest.fixture(scope="module")
def module_docs():
    """The documentation of every module the roles call, doc fragments resolved (ansible-doc --json)."""
    names = sorted({NAMESPACE + module for role in ROLES for module, _unused in module_calls(role)})
    result = subprocess.run(
        [BIN / "ansible-doc", "--json", "-t", "module", *names],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        cwd=REPO,
        check=True,
    )
    return {name[len(NAMESPACE) :]: entry["doc"] for name, entry in json.loads(result.stdout).items()}


class _SpecCaptured(Exception):
    pass


def argument_spec(module_name):
    """The argument_spec the module's main() hands to AnsibleModule (no_log is not in the documentation)."""
    path = REPO / "plugins" / "modules" / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(f"_pgdr_agreement_{module_name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    captured = {}

    def capture(argument_spec, **_kwargs):
        captured["spec"] = argument_spec
        raise _SpecCaptured

    module.AnsibleModule = capture
    with pytest.raises(_SpecCaptured):
        module.main()
    return captured["spec"]


# ---------------------------------------------------------------------------------------------------------------------
# Comparisons


def _readme_default(cell):
    """A README default cell as a value: `required...` -> _MISSING, `none` -> no default, a single code span -> its
    YAML value, else the text itself (prose, compared as it is)."""
    if cell.startswith("required"):
        return _MISSING
    if cell == "none":
        return None  # an optional input with no default (left undefined)
    if match := re.fullmatch(r"`([^`]*)`", cell):
        text = match.group(1).replace("\\|", "|")
        if "{{" in text:
            return text
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return cell


def _same(a, b):
    """Equal as YAML values (1 and 1.0 alike, True and 1 not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _falsy(value):
    return value in (None, "", 0, [], {}) or value is False


def _suboption_no_log(module_spec, role_spec, where, problems):
    """A dict input that declares suboptions must mark the ones the module keeps secret no_log."""
    module_sub = module_spec.get("options") or {}
    for name, sub in (role_spec.get("options") or {}).items():
        if (module_sub.get(name) or {}).get("no_log") and not sub.get("no_log"):
            problems.append(f"{where}.{name}: the module's suboption is no_log, the role's is not")
        if name in module_sub:
            _suboption_no_log(module_sub[name], sub, f"{where}.{name}", problems)


def _resolved(default, specs):
    """A role default that is just another input (``"{{ role_other }}"``) stands for that input's default."""
    seen = set()
    while isinstance(default, str) and (match := _PLAIN.match(default.strip())) and match.group(1) in specs:
        if match.group(1) in seen:
            break
        seen.add(match.group(1))
        default = specs[match.group(1)].get("default")
    return default


def compare(role, input_name, specs, module_name, option, omittable, doc_option, arg_option):
    """Every disagreement between one role input and the module option it feeds, as (check, message)."""
    found = []
    spec = specs[input_name]
    where = f"{role}: {input_name} -> {module_name}.{option}"
    module_type = doc_option.get("type", "str")
    role_type = spec.get("type", "str")
    if role_type != module_type:
        found.append(("type", f"{where}: type {role_type}, the module's is {module_type}"))
    elif module_type == "list" and spec.get("elements") != doc_option.get("elements"):
        elements = doc_option.get("elements")
        found.append(("elements", f"{where}: elements {spec.get('elements')}, the module's {elements}"))
    choices = doc_option.get("choices")
    if sorted(map(str, spec.get("choices") or [])) != sorted(map(str, choices or [])):
        found.append(("choices", f"{where}: choices {spec.get('choices')}, the module's {choices}"))
    # A module option that is required has no default of its own: the role's default (or requiring it) is the
    # role's choice. Otherwise the role's default is the module's, or empty with "or omit" (the module's then).
    module_default = doc_option.get("default")
    role_default = _resolved(spec.get("default"), specs)
    required = spec.get("required", False)
    if (
        not doc_option.get("required")
        and not required
        and not (omittable and _falsy(role_default))
        and not _same(role_default, module_default)
    ):
        found.append(("default", f"{where}: default {role_default!r}, the module's {module_default!r}"))
    if doc_option.get("required") and not required and role_default is None:
        found.append(("required", f"{where}: the module requires it; the role neither requires it nor sets it"))
    if arg_option.get("no_log") and not spec.get("no_log"):
        found.append(("no_log", f"{where}: the module's option is no_log, the role input is not no_log: true"))
    sub_problems = []
    _suboption_no_log(arg_option, spec, where, sub_problems)
    found += [("no_log", problem) for problem in sub_problems]
    return found


# ---------------------------------------------------------------------------------------------------------------------
# The tests


def test_every_role_input_agrees_with_the_module_option_it_feeds(module_docs):
    problems, used = [], set()
    arg_specs = {}
    for role in ROLES:
        specs, readme = role_specs(role), readme_inputs(role)
        for module_name, mapped in module_calls(role):
            options = module_docs[module_name].get("options") or {}
            if module_name not in arg_specs:
                arg_specs[module_name] = argument_spec(module_name)
            for option, (input_name, omittable) in mapped.items():
                if input_name not in specs:
                    continue  # an internal value (__name, a registered result), not an input
                if option not in options:
                    problems.append(f"{role}: {input_name} feeds {module_name}.{option}, which is not documented")
                    continue
                for check, message in compare(
                    role,
                    input_name,
                    specs,
                    module_name,
                    option,
                    omittable,
                    options[option],
                    arg_specs[module_name].get(option, {}),
                ):
                    if (role, input_name, check) in ALLOWED:
                        used.add((role, input_name, check))
                    else:
                        problems.append(message)
                if input_name not in readme:
                    problems.append(f"{role}: {input_name} (feeds {module_name}.{option}) is not in the README")
    assert not problems, "\n".join(dict.fromkeys(problems))
    assert used == set(ALLOWED), f"allow-list entries that no longer apply: {sorted(set(ALLOWED) - used)}"


def test_every_allowed_exception_has_a_reason():
    assert all(len(reason) > 20 for reason in ALLOWED.values()), ALLOWED


@pytest.mark.parametrize("role", ROLES)
def test_readme_defaults_and_argument_specs_agree(role):
    """The README's input tables, defaults/main.yml and meta/argument_specs.yml: the same names, the same defaults."""
    problems, extra_vars = [], {}
    specs, readme, defaults = role_specs(role), readme_inputs(role, extra_vars), role_defaults(role)
    for name in sorted(set(specs) - set(readme)):
        problems.append(f"{name}: in argument_specs, not in the README's inputs")
    for name in sorted(set(readme) - set(specs)):
        problems.append(f"{name}: in the README's inputs, not in argument_specs")
    for name, spec in specs.items():
        required = spec.get("required", False)
        if name in extra_vars:
            problems.extend(_extra_var_problems(name, *extra_vars[name], spec, defaults))
            continue
        if name in defaults:
            if required:
                problems.append(f"{name}: required in argument_specs but set in defaults/main.yml")
            elif not _same(defaults[name], spec.get("default")):
                problems.append(f"{name}: defaults/main.yml {defaults[name]!r}, argument_specs {spec.get('default')!r}")
        elif not required and spec.get("default") is not None:
            problems.append(f"{name}: argument_specs default {spec.get('default')!r}, not in defaults/main.yml")
        if name not in readme:
            continue
        cell = _readme_default(readme[name])
        if required:
            if cell is not _MISSING:
                problems.append(f"{name}: required in argument_specs, the README says {readme[name]}")
        elif cell is _MISSING:
            problems.append(f"{name}: the README says required, argument_specs does not")
        elif not _same(cell, spec.get("default")):
            problems.append(f"{name}: README default {readme[name]}, argument_specs {spec.get('default')!r}")
    assert not problems, f"{role}:\n" + "\n".join(problems)
