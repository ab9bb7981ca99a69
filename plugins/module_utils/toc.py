"""The table of contents of a schema archive (``pg_restore -l``) and the entries a restore into a Supabase project
leaves out, each with its reason: what the target project has already (its extensions and publications), and
what only the platform may set (its roles' event triggers and default privileges, privileges on its schemas,
comments on extensions). Everything else is restored, so a restore fails loudly on anything it cannot do.
"""

from __future__ import annotations

import os
import re
import subprocess

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec
from ansible_collections.pgdr.supabase.plugins.module_utils.errors import DRError, redact

# The entry kinds pg_dump writes, longest first so that "DEFAULT ACL" is not read as "DEFAULT".
DESCS = sorted(
    (
        "ACL",
        "AGGREGATE",
        "BLOB",
        "BLOBS",
        "BLOB METADATA",
        "CAST",
        "CHECK CONSTRAINT",
        "COLLATION",
        "COMMENT",
        "CONSTRAINT",
        "CONVERSION",
        "DATABASE",
        "DATABASE PROPERTIES",
        "DEFAULT",
        "DEFAULT ACL",
        "DOMAIN",
        "ENCODING",
        "EVENT TRIGGER",
        "EXTENSION",
        "FK CONSTRAINT",
        "FOREIGN DATA WRAPPER",
        "FOREIGN SERVER",
        "FOREIGN TABLE",
        "FUNCTION",
        "INDEX",
        "INDEX ATTACH",
        "LARGE OBJECT",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "POLICY",
        "PROCEDURAL LANGUAGE",
        "PROCEDURE",
        "PUBLICATION",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY",
        "RULE",
        "SCHEMA",
        "SEARCHPATH",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SERVER",
        "SHELL TYPE",
        "STATISTICS",
        "STDSTRINGS",
        "SUBSCRIPTION",
        "SUBSCRIPTION TABLE",
        "TABLE",
        "TABLE ATTACH",
        "TABLE DATA",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TRANSFORM",
        "TRIGGER",
        "TYPE",
        "USER MAPPING",
        "VIEW",
    ),
    key=len,
    reverse=True,
)
_ENTRY = re.compile(r"^(?P<id>\d+);\s+\d+\s+\d+\s+(?P<rest>.*)$")


class Entry:
    """One line of ``pg_restore -l``: ``<id>; <catalog> <oid> <desc> <namespace> <tag> <owner>``."""

    def __init__(self, line, desc, namespace, tag, owner):
        self.line = line
        self.desc = desc
        self.namespace = namespace
        self.tag = tag
        self.owner = owner

    def __repr__(self):
        return f"Entry({self.desc!r}, {self.namespace!r}, {self.tag!r}, {self.owner!r})"


def parse(text):
    """The entries of a ``pg_restore -l`` listing (comment lines skipped)."""
    entries = []
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if not match:
            continue
        rest = match["rest"]
        desc = next((d for d in DESCS if rest == d or rest.startswith(d + " ")), None)
        if desc is None:
            raise ValueError(f"unknown archive entry: {line!r}")
        rest = rest[len(desc) + 1 :]
        namespace, _, rest = rest.partition(" ")
        # The owner is the last word; entries without one (comments) end with a space.
        tag, _, owner = rest.rpartition(" ") if not rest.endswith(" ") else (rest[:-1], "", "")
        entries.append(Entry(line, desc, namespace, tag, owner))
    return entries


def listing(pg_restore, archive, env, where):
    """The archive's entries, read with ``pg_restore -l``."""
    proc = subprocess.run([pg_restore, "-l", archive], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise DRError(
            f"pg_restore cannot list the schema archive: {redact(proc.stderr.strip())[-800:]}",
            step="restore schema",
            subject=where,
            hint="restore another backup; this archive is damaged",
        )
    return parse(proc.stdout)


def select(entries, platform_schemas=(), platform_roles=(), target_extensions=(), target_publications=()):
    """(kept, skipped): the entries to restore, and [(entry, reason)] for the ones a restore leaves out.

    platform_schemas are name patterns (``pg_*``-style, as dumpspec lists them): the target may not have every
    platform schema the source had."""
    platform_roles = set(platform_roles)
    kept, skipped = [], []
    skipped_event_triggers = set()
    for entry in entries:
        reason = _skip_reason(entry, platform_schemas, platform_roles, target_extensions, target_publications)
        if entry.desc == "EVENT TRIGGER" and reason:
            skipped_event_triggers.add(entry.tag)
        if (
            not reason
            and entry.desc in ("COMMENT", "SECURITY LABEL")
            and entry.tag.startswith("EVENT TRIGGER ")
            and entry.tag[len("EVENT TRIGGER ") :] in skipped_event_triggers
        ):
            reason = "the platform's event trigger"
        if reason:
            skipped.append((entry, reason))
        else:
            kept.append(entry)
    return kept, skipped


def _skip_reason(entry, platform_schemas, platform_roles, target_extensions, target_publications):  # noqa: PLR0911
    desc, tag = entry.desc, entry.tag
    if desc == "EXTENSION" and tag in target_extensions:
        return "the target has this extension"
    if desc == "COMMENT" and tag.startswith("EXTENSION "):
        return "an extension's comment is its own (and only its owner may set it)"
    if desc == "PUBLICATION" and tag in target_publications:
        return "the target has this publication"
    if desc in ("EVENT TRIGGER", "DEFAULT ACL") and entry.owner in platform_roles:
        return f"the platform's ({entry.owner})"
    schema = tag[len("SCHEMA ") :].strip('"') if tag.startswith("SCHEMA ") else None
    if desc in ("ACL", "COMMENT", "SECURITY LABEL") and (
        dumpspec.matches(entry.namespace, platform_schemas)
        or (schema is not None and dumpspec.matches(schema, platform_schemas))
    ):
        return "the platform's schema"
    if desc == "SCHEMA" and dumpspec.matches(tag.strip('"'), platform_schemas):
        return "the platform's schema"
    return None


def write_list(entries, path):
    """The list file for ``pg_restore -L``: the kept entries, in the archive's order (mode 0600, like every file
    of the work folder)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(entry.line + "\n" for entry in entries)
    return path
