"""The app's catalog, as a fingerprint: every object the app owns, with a canonical definition, its owner and its
ACL, read in the backup's snapshot and read again from a restored database; the differences between the two, named
object by object; and the statements that make a restored copy's privileges equal its source's.

What is the app's:
- every object in the app's schemas (those the schema dump holds), extension members aside;
- on the platform's tables (``auth.*``, ``storage.*``, ``realtime.*``, ...): the triggers whose function is not the
  platform's, every policy (but on an extension's own tables), the functions the app's roles own, the privileges the
  app's roles granted, and publication membership;
- the app's roles, the default privileges of the app's roles, the extensions with their versions and schemas, the
  event triggers the app's roles own, large objects, sequence values and materialized views' populated state.
Platform-owned objects stay out: the target project has them.

Definitions are read with ``search_path`` empty, so every name in them is schema-qualified and two reads of the
same catalog give the same text. Nothing here writes, but ``reconcile_*`` which return statements to run.
"""

from __future__ import annotations

import hashlib
import re

from ansible_collections.pgdr.supabase.plugins.module_utils import dumpspec

FINGERPRINT_VERSION = 1
# The schema a restore keeps its marker in (project mode): the tool's own, never the app's.
TOOL_SCHEMA = "pgdr_restore"
PRIVILEGES = {
    "r": "SELECT",
    "a": "INSERT",
    "w": "UPDATE",
    "d": "DELETE",
    "D": "TRUNCATE",
    "x": "REFERENCES",
    "t": "TRIGGER",
    "X": "EXECUTE",
    "U": "USAGE",
    "C": "CREATE",
    "c": "CONNECT",
    "T": "TEMPORARY",
    "s": "SET",
    "A": "ALTER SYSTEM",
}
# What a kind's objects are called in GRANT/REVOKE and ALTER DEFAULT PRIVILEGES.
GRANT_TARGETS = {
    "table": "TABLE",
    "view": "TABLE",
    "matview": "TABLE",
    "foreign_table": "TABLE",
    "sequence": "SEQUENCE",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "schema": "SCHEMA",
    "type": "TYPE",
    "domain": "DOMAIN",
    "large_object": "LARGE OBJECT",
}
DEFAULT_ACL_TYPES = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
# The built-in default privileges of an object type for its owner (acldefault), as a default ACL row changes them.
_ACLDEFAULT_TYPE = {"r": "r", "S": "s", "f": "f", "T": "T", "n": "n"}


class Scope:
    """Which schemas and roles are the app's and which the platform's, read once from a connection."""

    def __init__(self, conn, flavor):
        self.flavor = flavor
        names = [r for (r,) in conn.execute("select rolname from pg_roles").fetchall()]
        self.current = conn.execute("select current_user").fetchone()[0]
        reserved = dumpspec.SUPABASE_RESERVED_ROLES if flavor == "supabase" else dumpspec.POSTGRES_RESERVED_ROLES
        builtin = {n for n in names if n.startswith("pg_")}
        self.app_roles = sorted(
            {n for n in names if n not in builtin and not dumpspec.matches(n, reserved)}
            | {self.current}
            | ({"postgres"} & set(names))
        )
        self.platform_roles = sorted(set(names) - builtin - set(self.app_roles))
        schemas = [s for (s,) in conn.execute("select nspname from pg_namespace").fetchall()]
        self.app_schemas = sorted(s for s in schemas if dumpspec.schema_in_dump(s, flavor) and s != TOOL_SCHEMA)
        self.platform_schemas = sorted(
            s
            for s in schemas
            if flavor == "supabase"
            and not dumpspec.matches(s, dumpspec.SYSTEM_SCHEMAS)
            and dumpspec.matches(s, dumpspec.SUPABASE_SCHEMA_EXCLUDE)
        )

    def params(self):
        return {
            "app": self.app_schemas,
            "platform": self.platform_schemas,
            "app_roles": self.app_roles,
            "platform_roles": self.platform_roles,
        }


_RELATION_ACL = (
    "coalesce(c.relacl, case c.relkind when 'S' then acldefault('s', c.relowner) else acldefault('r', c.relowner) end)"
)


def _acl(expr):
    """SQL: an ACL as a sorted text array (NULL stays NULL)."""
    return f"(select array_agg(a::text order by a::text) from unnest({expr}) a)"


_NOT_EXT = (
    "not exists (select 1 from pg_depend d where d.classid = {cls}::regclass and d.objid = {oid} and d.deptype = 'e')"
)


def _not_extension_member(cls, oid):
    return _NOT_EXT.format(cls=f"'{cls}'", oid=oid)


# Each query yields (kind, name, definition, owner, acl); the definition is hashed unless the kind keeps it as text.
# Comments of the kinds there are thousands of (relations, columns, constraints, indexes) are joined from
# pg_description rather than read with obj_description() per row: the same text, a third less time.
_QUERIES = {
    "schema": f"""
        select 'schema', n.nspname, coalesce(obj_description(n.oid, 'pg_namespace'), ''),
               pg_get_userbyid(n.nspowner), {_acl("coalesce(n.nspacl, acldefault('n', n.nspowner))")},
               format('%%I', n.nspname)
          from pg_namespace n where n.nspname = any(%(app)s)""",
    "relation": f"""
        select case c.relkind when 'r' then 'table' when 'p' then 'table' when 'v' then 'view'
                              when 'm' then 'matview' when 'S' then 'sequence' else 'foreign_table' end,
               n.nspname || '.' || c.relname,
               concat_ws(' | ', c.relkind::text, 'replident=' || c.relreplident::text,
                   array_to_string(c.reloptions, ','),
                   pg_get_partkeydef(c.oid),
                   (select 'partition of ' || pn.nspname || '.' || pc.relname || ' ' ||
                           pg_get_expr(c.relpartbound, c.oid)
                      from pg_inherits i join pg_class pc on pc.oid = i.inhparent
                      join pg_namespace pn on pn.oid = pc.relnamespace where i.inhrelid = c.oid),
                   case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end,
                   (select concat_ws(',', s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax,
                                     s.seqmin, s.seqcache, s.seqcycle)
                      from pg_sequence s where s.seqrelid = c.oid),
                   (select 'owned by ' || dn.nspname || '.' || dc.relname || '.' || da.attname
                      from pg_depend d join pg_class dc on dc.oid = d.refobjid
                      join pg_namespace dn on dn.oid = dc.relnamespace
                      join pg_attribute da on da.attrelid = d.refobjid and da.attnum = d.refobjsubid
                     where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype in ('a', 'i')
                       and c.relkind = 'S'),
                   (select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                      || case when a.attnotnull then ' not null' else '' end
                                      || case when a.attgenerated = 's' then ' generated' else '' end
                                      || case when a.attidentity <> '' then ' identity ' || a.attidentity::text
                                              else '' end
                                      || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
                                      || case when a.attcollation <> 0 and a.attcollation <> t.typcollation
                                              then ' collate ' || a.attcollation::regcollation::text else '' end
                                      || coalesce(' comment ' || cd.description, ''),
                                      ', ' order by a.attnum)
                      from pg_attribute a join pg_type t on t.oid = a.atttypid
                      left join pg_attrdef ad on ad.adrelid = a.attrelid and ad.adnum = a.attnum
                      left join pg_description cd on cd.objoid = a.attrelid and cd.classoid = 'pg_class'::regclass
                                                 and cd.objsubid = a.attnum
                     where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped),
                   'comment ' || dc.description),
               pg_get_userbyid(c.relowner),
               {_acl(_RELATION_ACL)}, format('%%I.%%I', n.nspname, c.relname)
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
          left join pg_description dc on dc.objoid = c.oid and dc.classoid = 'pg_class'::regclass and dc.objsubid = 0
         where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and n.nspname = any(%(app)s)
           and {_not_extension_member("pg_class", "c.oid")}""",
    "column": f"""
        select 'column', n.nspname || '.' || c.relname || '.' || a.attname, '', pg_get_userbyid(c.relowner),
               {_acl("a.attacl")}, array[format('%%I.%%I', n.nspname, c.relname), quote_ident(a.attname)]
          from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
         where a.attacl is not null and a.attnum > 0 and not a.attisdropped
           and (n.nspname = any(%(app)s) or n.nspname = any(%(platform)s))""",
    "rls": """
        select 'rls', n.nspname || '.' || c.relname,
               case when c.relrowsecurity then 'enabled' else 'disabled' end
               || case when c.relforcerowsecurity then ', forced' else '' end, null, null, null
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and n.nspname = any(%(app)s)""",
    "matview_data": """
        select 'matview_data', n.nspname || '.' || c.relname,
               case when c.relispopulated then 'populated' else 'not populated' end, null, null, null
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'm' and n.nspname = any(%(app)s)""",
    "constraint": """
        select 'constraint', n.nspname || '.' || coalesce(c.relname, t.typname) || '.' || k.conname,
               concat_ws(' | ', pg_get_constraintdef(k.oid), 'comment ' || dk.description),
               null, null, null
          from pg_constraint k join pg_namespace n on n.oid = k.connamespace
          left join pg_description dk on dk.objoid = k.oid and dk.classoid = 'pg_constraint'::regclass
                                     and dk.objsubid = 0
          left join pg_class c on c.oid = k.conrelid left join pg_type t on t.oid = k.contypid
         where n.nspname = any(%(app)s)""",
    "index": """
        select 'index', n.nspname || '.' || i.relname,
               concat_ws(' | ', pg_get_indexdef(i.oid), 'comment ' || di.description),
               null, null, null
          from pg_index x join pg_class i on i.oid = x.indexrelid join pg_namespace n on n.oid = i.relnamespace
          left join pg_description di on di.objoid = i.oid and di.classoid = 'pg_class'::regclass and di.objsubid = 0
         where n.nspname = any(%(app)s)""",
    "trigger": """
        select 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname,
               concat_ws(' | ', pg_get_triggerdef(t.oid), 'enabled=' || t.tgenabled::text,
                         'comment ' || obj_description(t.oid, 'pg_trigger')), null, null, null
          from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
          join pg_proc f on f.oid = t.tgfoid join pg_namespace fn on fn.oid = f.pronamespace
         where not t.tgisinternal
           and (n.nspname = any(%(app)s)
                or (n.nspname = any(%(platform)s)
                    and not (fn.nspname = any(%(platform)s)
                             and pg_get_userbyid(f.proowner) = any(%(platform_roles)s))))""",
    "policy": f"""
        select 'policy', n.nspname || '.' || c.relname || '.' || p.polname,
               concat_ws(' | ', p.polcmd::text, p.polpermissive::text,
                         coalesce((select string_agg(case when r = 0 then 'public' else pg_get_userbyid(r) end, ','
                                                     order by 1)
                                     from unnest(p.polroles) r), ''),
                         'using ' || pg_get_expr(p.polqual, p.polrelid),
                         'check ' || pg_get_expr(p.polwithcheck, p.polrelid),
                         'comment ' || obj_description(p.oid, 'pg_policy')), null, null, null
          from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%(app)s)
            or (n.nspname = any(%(platform)s) and {_not_extension_member("pg_class", "c.oid")})""",
    "rule": """
        select 'rule', n.nspname || '.' || c.relname || '.' || r.rulename, pg_get_ruledef(r.oid), null, null, null
          from pg_rewrite r join pg_class c on c.oid = r.ev_class join pg_namespace n on n.oid = c.relnamespace
         where r.rulename <> '_RETURN' and n.nspname = any(%(app)s)""",
    "function": f"""
        select case p.prokind when 'p' then 'procedure' else 'function' end,
               n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               concat_ws(' | ',
                   case when p.prokind = 'a'
                        then 'aggregate ' || pg_get_function_arguments(p.oid) || ' ' ||
                             (select concat_ws(',', a.aggtransfn::regproc::text, a.aggtranstype::regtype::text,
                                               a.aggfinalfn::regproc::text, a.agginitval)
                                from pg_aggregate a where a.aggfnoid = p.oid)
                        else pg_get_functiondef(p.oid) end,
                   'comment ' || obj_description(p.oid, 'pg_proc')),
               pg_get_userbyid(p.proowner), {_acl("coalesce(p.proacl, acldefault('f', p.proowner))")},
               format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where {_not_extension_member("pg_proc", "p.oid")}
           and (n.nspname = any(%(app)s)
                or (n.nspname = any(%(platform)s) and pg_get_userbyid(p.proowner) = any(%(app_roles)s)))""",
    "type": f"""
        select case t.typtype when 'd' then 'domain' else 'type' end, n.nspname || '.' || t.typname,
               concat_ws(' | ', t.typtype::text,
                   (select string_agg(e.enumlabel, ',' order by e.enumsortorder) from pg_enum e
                     where e.enumtypid = t.oid),
                   case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) || ' notnull='
                        || t.typnotnull || coalesce(' default ' || t.typdefault, '') end,
                   (select string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), ',' order by k.conname)
                      from pg_constraint k where k.contypid = t.oid),
                   (select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ','
                                      order by a.attnum)
                      from pg_attribute a where a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped),
                   (select r.rngsubtype::regtype::text from pg_range r where r.rngtypid = t.oid),
                   'comment ' || obj_description(t.oid, 'pg_type')),
               pg_get_userbyid(t.typowner), {_acl("coalesce(t.typacl, acldefault('T', t.typowner))")},
               format('%%I.%%I', n.nspname, t.typname)
          from pg_type t join pg_namespace n on n.oid = t.typnamespace
         where t.typtype in ('e', 'd', 'c', 'r') and n.nspname = any(%(app)s)
           and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
           and {_not_extension_member("pg_type", "t.oid")}""",
    "extension": """
        select 'extension', e.extname, e.extversion || ' in ' || n.nspname, null, null, null
          from pg_extension e join pg_namespace n on n.oid = e.extnamespace""",
    "publication": """
        select 'publication', p.pubname,
               concat_ws(',', 'all=' || p.puballtables, 'insert=' || p.pubinsert, 'update=' || p.pubupdate,
                         'delete=' || p.pubdelete, 'truncate=' || p.pubtruncate, 'viaroot=' || p.pubviaroot),
               pg_get_userbyid(p.pubowner), null, null
          from pg_publication p""",
    "publication_table": """
        select 'publication_table', p.pubname || ' ' || n.nspname || '.' || c.relname,
               concat_ws(' | ', pg_get_expr(r.prqual, r.prrelid),
                         (select string_agg(a.attname, ',' order by a.attnum) from pg_attribute a
                           where a.attrelid = r.prrelid and a.attnum = any(r.prattrs))), null, null, null
          from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
          join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%(app)s) or n.nspname = any(%(platform)s)""",
    "event_trigger": """
        select 'event_trigger', e.evtname,
               concat_ws(' | ', e.evtevent, array_to_string(e.evttags, ','), e.evtfoid::regproc::text,
                         'enabled=' || e.evtenabled::text), pg_get_userbyid(e.evtowner), null, null
          from pg_event_trigger e where pg_get_userbyid(e.evtowner) = any(%(app_roles)s)""",
    "role": """
        select 'role', r.rolname,
               concat_ws(' | ', 'super=' || r.rolsuper, 'inherit=' || r.rolinherit, 'createrole=' || r.rolcreaterole,
                         'createdb=' || r.rolcreatedb, 'login=' || r.rolcanlogin, 'replication=' || r.rolreplication,
                         'bypassrls=' || r.rolbypassrls, 'connlimit=' || r.rolconnlimit,
                         'valid=' || coalesce(r.rolvaliduntil::text, ''),
                         'config=' || coalesce(array_to_string(array(select unnest(r.rolconfig) order by 1), ';'), ''),
                         'member of ' || coalesce((select string_agg(g.rolname || case when m.admin_option
                                                                                      then '*' else '' end,
                                                                     ',' order by g.rolname)
                                                     from pg_auth_members m join pg_roles g on g.oid = m.roleid
                                                    where m.member = r.oid), '')), null, null, null
          from pg_roles r where r.rolname = any(%(app_roles)s) and r.rolname <> 'postgres'
           and r.rolname <> current_user""",
    "large_object": f"""
        select 'large_object', l.oid::text, '', pg_get_userbyid(l.lomowner),
               {_acl("coalesce(l.lomacl, acldefault('L', l.lomowner))")}, l.oid::text
          from pg_largeobject_metadata l""",
}
# The platform's own objects with their ACLs; the items an app role granted are the app's (the rest is the platform's).
_PLATFORM_ACLS = """
    select case c.relkind when 'S' then 'sequence' else 'table' end, n.nspname || '.' || c.relname,
           pg_get_userbyid(c.relowner), c.relacl::text[], format('%%I.%%I', n.nspname, c.relname)
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and n.nspname = any(%(platform)s) and c.relacl is not null
    union all
    select case p.prokind when 'p' then 'procedure' else 'function' end,
           n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           pg_get_userbyid(p.proowner), p.proacl::text[],
           format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(%(platform)s) and p.proacl is not null
       and not pg_get_userbyid(p.proowner) = any(%(app_roles)s)
    union all
    select 'schema', n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text[], format('%%I', n.nspname)
      from pg_namespace n where n.nspname = any(%(platform)s) and n.nspacl is not null"""
_DEFAULT_ACLS = """
    select pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text,
           (select array_agg(a::text order by a::text) from unnest(d.defaclacl) a)
      from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace
     where pg_get_userbyid(d.defaclrole) = any(%(app_roles)s)"""
# Kinds whose definition stays readable (short facts a message can quote) instead of being hashed.
PLAIN_KINDS = ("matview_data", "extension", "publication", "rls")


def _digest(text):
    return hashlib.sha256((text or "").encode()).hexdigest()[:32]


def qualified_names(conn):
    """Definitions are read with every name schema-qualified (search_path empty), as pg_dump does."""
    conn.execute("select pg_catalog.set_config('search_path', '', true)")


def capture(conn, flavor, scope=None):
    """The fingerprint of the database behind conn (inside its transaction): {"version", "objects",
    "default_acls"}; objects maps "kind name" to {"def", "owner", "acl"}."""
    scope = scope or Scope(conn, flavor)
    qualified_names(conn)
    params = scope.params()
    objects = {}
    platform = tuple(f"{s}." for s in scope.platform_schemas)
    for query in _QUERIES.values():
        for kind, name, definition, owner, acl, ref in conn.execute(query, params).fetchall():
            entry = {"def": definition if kind in PLAIN_KINDS else _digest(definition)}
            if owner is not None:
                entry["owner"] = owner
            if acl is not None:
                entry["acl"] = list(acl)
            if ref is not None:
                entry["ref"] = ref
            if kind == "column" and name.startswith(platform):
                entry["acl"] = app_granted(acl, scope.app_roles)
                if not entry["acl"]:
                    continue
            objects[f"{kind} {name}"] = entry
    if scope.platform_schemas:
        for kind, name, owner, acl, ref in conn.execute(_PLATFORM_ACLS, params).fetchall():
            items = app_granted(acl, scope.app_roles)
            if items:
                objects[f"grant {kind} {name}"] = {"def": "", "owner": owner, "acl": items, "ref": ref, "on": kind}
    default_acls = {
        f"{role} {schema or '*'} {objtype}": list(acl or [])
        for role, schema, objtype, acl in conn.execute(_DEFAULT_ACLS, params).fetchall()
    }
    return {
        "version": FINGERPRINT_VERSION,
        "flavor": flavor,
        "app_schemas": scope.app_schemas,
        "objects": dict(sorted(objects.items())),
        "default_acls": dict(sorted(default_acls.items())),
    }


# --- ACL items -------------------------------------------------------------------------------------------------


def app_granted(items, app_roles):
    """The ACL items (text) whose grantor is one of the app's roles, sorted."""
    return sorted(item for item in items or () if parse_aclitem(item)[2] in app_roles)


_ACLITEM = re.compile(r'^(?P<grantee>"(?:[^"]|"")*"|[^=]*)=(?P<privs>[A-Za-z*]*)/(?P<grantor>.+)$')


def _unquote(name):
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def parse_aclitem(text):
    """'anon=arw*/postgres' -> ("anon", {"a": False, "r": False, "w": True}, "postgres"); grantee "" is PUBLIC."""
    match = _ACLITEM.match(text)
    if not match:
        raise ValueError(f"not an ACL item: {text!r}")
    privs, letters = {}, match["privs"]
    for i, letter in enumerate(letters):
        if letter == "*":
            continue
        privs[letter] = i + 1 < len(letters) and letters[i + 1] == "*"
    return _unquote(match["grantee"]), privs, _unquote(match["grantor"])


def acl_map(items):
    """{(grantee, grantor): {letter: grant_option}} of an ACL given as text items."""
    result = {}
    for item in items or ():
        grantee, privs, grantor = parse_aclitem(item)
        result.setdefault((grantee, grantor), {}).update(privs)
    return result


def _privs_text(privs):
    return ", ".join(
        PRIVILEGES.get(p, p) + (" WITH GRANT OPTION" if grant else "") for p, grant in sorted(privs.items())
    )


def _grantee_text(grantee):
    return grantee or "PUBLIC"


def acl_differences(expected, actual):
    """(extra, missing): {grantee: {letter: grant option}} granted in actual but not in expected, and the reverse.
    Items are compared by grantee and privilege (with its grant option); the grantor is compared too."""
    exp, act = acl_map(expected), acl_map(actual)
    extra, missing = {}, {}
    for key in set(exp) | set(act):
        e, a = exp.get(key, {}), act.get(key, {})
        for letter, grant in a.items():
            if e.get(letter) != grant:
                extra.setdefault(key, {})[letter] = grant
        for letter, grant in e.items():
            if a.get(letter) != grant:
                missing.setdefault(key, {})[letter] = grant
    return extra, missing


# --- Comparison ------------------------------------------------------------------------------------------------


def _label(key):
    kind, _unused, name = key.partition(" ")
    return kind.replace("_", " "), name


def compare(expected, actual, ignore=()):
    """Every difference between two fingerprints, as {"kind", "object", "message"} dicts, sorted.

    ``ignore`` lists keys ("kind name") whose difference is expected (staging disarmed a trigger, for example);
    a restored database with any other difference is not equal to its source."""
    diffs = []
    exp_objects, act_objects = expected.get("objects", {}), actual.get("objects", {})
    for key in sorted(set(exp_objects) | set(act_objects)):
        if key in ignore:
            continue
        kind, name = _label(key)
        e, a = exp_objects.get(key), act_objects.get(key)
        if e is None:
            if kind == "extension":
                continue  # an extension the target has and the source had not takes nothing from the app
            if kind in {"grant", "column"}:
                for (grantee, _grantor), privs in acl_map(a.get("acl")).items():
                    diffs.append(
                        _diff(
                            kind,
                            name,
                            f"grant: {name} to {_grantee_text(grantee)} ({_privs_text(privs)}) is not in the backup",
                        )
                    )
                continue
            diffs.append(_diff(kind, name, f"{kind}: {name} is not in the backup"))
            continue
        if a is None:
            if kind in ("grant", "column"):
                for (grantee, _grantor), privs in acl_map(e.get("acl")).items():
                    diffs.append(
                        _diff(
                            kind, name, f"grant: {name} to {_grantee_text(grantee)} ({_privs_text(privs)}) is missing"
                        )
                    )
                continue
            diffs.append(_diff(kind, name, f"{kind}: {name} is missing"))
            continue
        diffs.extend(_compare_entry(kind, name, e, a))
    exp_def, act_def = expected.get("default_acls", {}), actual.get("default_acls", {})
    for key in sorted(set(exp_def) | set(act_def)):
        role, schema, objtype = key.split(" ")
        where = f"default privileges for role {role}" + ("" if schema == "*" else f" in schema {schema}")
        on = DEFAULT_ACL_TYPES.get(objtype, objtype).lower()
        extra, missing = acl_differences(
            exp_def.get(key, _builtin(role, schema, objtype)), act_def.get(key, _builtin(role, schema, objtype))
        )
        for (grantee, _g), privs in extra.items():
            diffs.append(
                _diff(
                    "default_acl",
                    key,
                    f"{where} on {on}: grant to {_grantee_text(grantee)} ({_privs_text(privs)}) is not in the backup",
                )
            )
        for (grantee, _g), privs in missing.items():
            diffs.append(
                _diff(
                    "default_acl",
                    key,
                    f"{where} on {on}: grant to {_grantee_text(grantee)} ({_privs_text(privs)}) is missing",
                )
            )
    return diffs


def _builtin(role, schema, objtype):
    """The ACL a missing default ACL row stands for: nothing in a schema; the built-in default globally."""
    if schema != "*":
        return []
    owner = role
    items = {
        "r": [f"{owner}=arwdDxt/{owner}"],
        "S": [f"{owner}=rwU/{owner}"],
        "f": [f"=X/{owner}", f"{owner}=X/{owner}"],
        "T": [f"=U/{owner}", f"{owner}=U/{owner}"],
        "n": [f"{owner}=UC/{owner}"],
    }
    return items.get(objtype, [])


def _diff(kind, name, message):
    return {"kind": kind, "object": name, "message": message}


def _compare_entry(kind, name, e, a):
    diffs = []
    if e.get("def") != a.get("def"):
        if kind == "matview data":
            if e["def"] == "populated":
                diffs.append(_diff(kind, name, f"matview: {name} is not populated"))
            else:
                diffs.append(_diff(kind, name, f"matview: {name} is populated; the backup's was not"))
        elif kind in ("extension", "publication", "rls"):
            diffs.append(_diff(kind, name, f"{kind}: {name} is {a['def']}; the backup says {e['def']}"))
        else:
            diffs.append(_diff(kind, name, f"{kind}: {name} differs from the backup (definition)"))
    if e.get("owner") != a.get("owner"):
        diffs.append(
            _diff(kind, name, f"owner: {kind} {name} is owned by {a.get('owner')}; the backup says {e.get('owner')}")
        )
    if "acl" in e or "acl" in a:
        extra, missing = acl_differences(e.get("acl"), a.get("acl"))
        for (grantee, grantor), privs in sorted(extra.items()):
            diffs.append(
                _diff(
                    kind,
                    name,
                    f"grant: {name} to {_grantee_text(grantee)} ({_privs_text(privs)})"
                    f"{'' if grantor == e.get('owner') else f' by {grantor}'} is not in the backup",
                )
            )
        for (grantee, grantor), privs in sorted(missing.items()):
            diffs.append(
                _diff(
                    kind,
                    name,
                    f"grant: {name} to {_grantee_text(grantee)} ({_privs_text(privs)})"
                    f"{'' if grantor == e.get('owner') else f' by {grantor}'} is missing",
                )
            )
    return diffs


# --- What the schema dump cannot carry: the app's objects on the platform's tables ------------------------------

_PLATFORM_TRIGGERS = """
    select n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text,
           format('%%I.%%I', n.nspname, c.relname), format('%%I', t.tgname)
      from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      join pg_proc f on f.oid = t.tgfoid join pg_namespace fn on fn.oid = f.pronamespace
     where not t.tgisinternal and n.nspname = any(%(platform)s)
       and not (fn.nspname = any(%(platform)s) and pg_get_userbyid(f.proowner) = any(%(platform_roles)s))
     order by 1"""
_PLATFORM_POLICIES = f"""
    select n.nspname || '.' || c.relname || '.' || p.polname,
           format('CREATE POLICY %%I ON %%I.%%I AS %%s FOR %%s TO %%s', p.polname, n.nspname, c.relname,
                  case when p.polpermissive then 'PERMISSIVE' else 'RESTRICTIVE' end,
                  case p.polcmd when 'r' then 'SELECT' when 'a' then 'INSERT' when 'w' then 'UPDATE'
                                when 'd' then 'DELETE' else 'ALL' end,
                  coalesce((select string_agg(case when r = 0 then 'PUBLIC' else quote_ident(pg_get_userbyid(r)) end,
                                              ', ' order by 1) from unnest(p.polroles) r), 'PUBLIC'))
           || coalesce(' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
           || coalesce(' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''),
           format('%%I ON %%I.%%I', p.polname, n.nspname, c.relname),
           obj_description(p.oid, 'pg_policy')
      from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any(%(platform)s) and {_not_extension_member("pg_class", "c.oid")}
     order by 1"""
_PLATFORM_FUNCTIONS = f"""
    select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
           pg_get_functiondef(p.oid),
           format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
           pg_get_userbyid(p.proowner), obj_description(p.oid, 'pg_proc'),
           case p.prokind when 'p' then 'PROCEDURE' else 'FUNCTION' end
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(%(platform)s) and p.prokind in ('f', 'p')
       and pg_get_userbyid(p.proowner) = any(%(app_roles)s) and {_not_extension_member("pg_proc", "p.oid")}
     order by 1"""
_PUBLICATION_PLATFORM_TABLES = """
    select p.pubname || ' ' || n.nspname || '.' || c.relname, format('%%I', p.pubname),
           format('%%I.%%I', n.nspname, c.relname)
      from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
      join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any(%(platform)s)
     order by 1"""
_TRIGGER_STATE = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def platform_ddl(conn, scope):
    """The statements that recreate the app's objects on the platform's tables, in order (functions first:
    triggers call them): [{"key": "kind name", "sql": [statements]}]. Run after the schema and the data."""
    qualified_names(conn)
    params = scope.params()
    items = []
    for name, definition, ident, owner, comment, what in conn.execute(_PLATFORM_FUNCTIONS, params).fetchall():
        sql = [definition.rstrip() + ";"]
        if owner != scope.current:
            sql.append(f"ALTER {what} {ident} OWNER TO {_quote_ident(owner)};")
        if comment is not None:
            sql.append(f"COMMENT ON {what} {ident} IS {_quote_literal(comment)};")
        items.append({"key": f"{what.lower()} {name}", "sql": sql})
    for name, definition, state, table, trigger in conn.execute(_PLATFORM_TRIGGERS, params).fetchall():
        sql = [definition + ";"]
        if state in _TRIGGER_STATE:
            sql.append(f"ALTER TABLE {table} {_TRIGGER_STATE[state]} {trigger};")
        items.append({"key": f"trigger {name}", "sql": sql})
    for name, definition, ident, comment in conn.execute(_PLATFORM_POLICIES, params).fetchall():
        sql = [definition + ";"]
        if comment is not None:
            sql.append(f"COMMENT ON POLICY {ident} IS {_quote_literal(comment)};")
        items.append({"key": f"policy {name}", "sql": sql})
    for name, publication, table in conn.execute(_PUBLICATION_PLATFORM_TABLES, params).fetchall():
        items.append(
            {"key": f"publication_table {name}", "sql": [f"ALTER PUBLICATION {publication} ADD TABLE {table};"]}
        )
    return items


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text):
    return "'" + text.replace("'", "''") + "'"


# --- Making a restored copy's privileges equal its source's ---------------------------------------------------

# ALTER ... OWNER TO names the relation kinds that GRANT calls TABLE by their own keyword.
_ALTER_KINDS = {**GRANT_TARGETS, "view": "VIEW", "matview": "MATERIALIZED VIEW", "foreign_table": "FOREIGN TABLE"}


class Statement:
    """One statement of a reconciliation, run as ``role`` (None: the connecting role)."""

    def __init__(self, sql, role=None, why=""):
        self.sql = sql
        self.role = role
        self.why = why

    def __repr__(self):
        return f"Statement({self.sql!r}, role={self.role!r})"


def _letters_sql(letters):
    return ", ".join(PRIVILEGES[p] for p in sorted(letters))


def _grantee_sql(grantee):
    return "PUBLIC" if grantee == "" else _quote_ident(grantee)


def _grant_clause(kind, entry):
    """("TABLE", "public.x", None) for an object, ("TABLE", "public.x", "col") for a column."""
    ref = entry.get("ref")
    if kind == "column":
        return "TABLE", ref[0], ref[1]
    target = GRANT_TARGETS.get(entry.get("on", kind))
    if target in ("FUNCTION", "PROCEDURE"):
        target = "ROUTINE"
    return target, ref, None


def _acl_statements(kind, entry, expected_acl, actual_acl, current):
    target, ref, column = _grant_clause(kind, entry)
    if target is None or ref is None:
        return []
    on = f"{target} {ref}"
    extra, missing = acl_differences(expected_acl, actual_acl)
    exp = acl_map(expected_acl)
    statements = []
    for (grantee, grantor), privs in sorted(extra.items()):
        role = None if grantor == current else grantor
        wanted = exp.get((grantee, grantor), {})
        drop = [p for p in privs if p not in wanted]
        downgrade = [p for p in privs if p in wanted and not wanted[p]]
        if drop:
            cols = f" ({column})" if column else ""
            privs_sql = ", ".join(f"{PRIVILEGES[p]}{cols}" for p in sorted(drop))
            statements.append(Statement(f"REVOKE {privs_sql} ON {on} FROM {_grantee_sql(grantee)} CASCADE;", role))
        if downgrade:
            cols = f" ({column})" if column else ""
            privs_sql = ", ".join(f"{PRIVILEGES[p]}{cols}" for p in sorted(downgrade))
            statements.append(
                Statement(f"REVOKE GRANT OPTION FOR {privs_sql} ON {on} FROM {_grantee_sql(grantee)} CASCADE;", role)
            )
    for (grantee, grantor), privs in sorted(missing.items()):
        role = None if grantor == current else grantor
        cols = f" ({column})" if column else ""
        for with_grant in (False, True):
            chosen = [p for p, grant in privs.items() if grant == with_grant]
            if chosen:
                privs_sql = ", ".join(f"{PRIVILEGES[p]}{cols}" for p in sorted(chosen))
                option = " WITH GRANT OPTION" if with_grant else ""
                statements.append(Statement(f"GRANT {privs_sql} ON {on} TO {_grantee_sql(grantee)}{option};", role))
    return statements


def owner_statements(expected, actual):
    """ALTER ... OWNER TO for the objects whose owner differs from the backup's (before the privileges: the
    owner's own ACL items follow it)."""
    statements = []
    act = actual.get("objects", {})
    for key, entry in expected.get("objects", {}).items():
        kind = key.split(" ", 1)[0]
        current = act.get(key)
        if current is None or kind not in _ALTER_KINDS or entry.get("ref") is None:
            continue
        if entry.get("owner") and current.get("owner") != entry["owner"]:
            statements.append(
                Statement(
                    f"ALTER {_ALTER_KINDS[kind]} {entry['ref']} OWNER TO {_quote_ident(entry['owner'])};",
                    why=f"owner of {key}",
                )
            )
    return statements


def acl_statements(expected, actual, current):
    """GRANT/REVOKE statements that make every object's ACL in actual equal to expected's; each runs as the
    grantor of the items it changes (the connecting role when it is the grantor)."""
    statements = []
    exp, act = expected.get("objects", {}), actual.get("objects", {})
    for key in sorted(set(exp) | set(act)):
        kind = key.split(" ", 1)[0]
        e, a = exp.get(key), act.get(key)
        if kind in ("grant", "column"):
            entry = e or a
            statements += _acl_statements(kind, entry, (e or {}).get("acl"), (a or {}).get("acl"), current)
        elif e is not None and a is not None and ("acl" in e or "acl" in a):
            statements += _acl_statements(
                kind, {**e, "ref": a.get("ref") or e.get("ref")}, e.get("acl"), a.get("acl"), current
            )
    return statements


def default_acl_statements(expected, actual, current):
    """ALTER DEFAULT PRIVILEGES statements that make the default ACLs of the app's roles in actual equal to
    expected's (a row that is absent stands for the built-in defaults)."""
    statements = []
    exp, act = expected.get("default_acls", {}), actual.get("default_acls", {})
    for key in sorted(set(exp) | set(act)):
        role, schema, objtype = key.split(" ")
        builtin = _builtin(role, schema, objtype)
        wanted, have = exp.get(key, builtin), act.get(key, builtin)
        extra, missing = acl_differences(wanted, have)
        head = f"ALTER DEFAULT PRIVILEGES FOR ROLE {_quote_ident(role)}" + (
            "" if schema == "*" else f" IN SCHEMA {_quote_ident(schema)}"
        )
        on = DEFAULT_ACL_TYPES[objtype]
        wanted_map = acl_map(wanted)
        for (grantee, grantor), privs in sorted(extra.items()):
            keep = wanted_map.get((grantee, grantor), {})
            drop = [p for p in privs if p not in keep]
            downgrade = [p for p in privs if p in keep and not keep[p]]
            if drop:
                statements.append(
                    Statement(f"{head} REVOKE {_letters_sql(drop)} ON {on} FROM {_grantee_sql(grantee)};")
                )
            if downgrade:
                statements.append(
                    Statement(
                        f"{head} REVOKE GRANT OPTION FOR {_letters_sql(downgrade)} ON {on} FROM "
                        f"{_grantee_sql(grantee)};"
                    )
                )
        for (grantee, _grantor), privs in sorted(missing.items()):
            for with_grant in (False, True):
                chosen = [p for p, grant in privs.items() if grant == with_grant]
                if chosen:
                    option = " WITH GRANT OPTION" if with_grant else ""
                    statements.append(
                        Statement(f"{head} GRANT {_letters_sql(chosen)} ON {on} TO {_grantee_sql(grantee)}{option};")
                    )
    return statements


def read_default_acls(conn, scope):
    """The default ACL rows of the app's roles, as capture() returns them."""
    return {
        "default_acls": {
            f"{role} {schema or '*'} {objtype}": list(acl or [])
            for role, schema, objtype, acl in conn.execute(_DEFAULT_ACLS, scope.params()).fetchall()
        }
    }


def run_statements(conn, statements):
    """Run statements in conn's transaction, each as its role; returns the SQL run. A statement that fails raises
    the database's error (the caller names it)."""
    done = []
    for statement in statements:
        if statement.role:
            conn.execute(f"SET LOCAL ROLE {_quote_ident(statement.role)}")
        try:
            conn.execute(statement.sql)
        finally:
            if statement.role:
                conn.execute("RESET ROLE")
        done.append(statement.sql if not statement.role else f"SET ROLE {statement.role}; {statement.sql}")
    return done
