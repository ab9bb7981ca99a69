# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for connection strings: point one at another database, mask its password for display, and build a
hosted project's."""

from ansible.errors import AnsibleFilterError

from ansible_collections.pgdr.supabase.plugins.module_utils.hosted_project import render_template

try:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # the controller's Python lacks psycopg: said when a filter is used, not at load time
    PSYCOPG_IMPORT_ERROR = exc
else:
    PSYCOPG_IMPORT_ERROR = None


def _need_psycopg():
    if PSYCOPG_IMPORT_ERROR is not None:
        raise AnsibleFilterError(
            f"the pgdr.supabase dsn filters need psycopg on the controller ({PSYCOPG_IMPORT_ERROR}): "
            "install the collection's requirements (meta/ee-requirements.txt) into the Python that runs Ansible"
        )


def dsn_database(dsn, database):
    """postgresql://u:p@h:5432/postgres | dsn_database('restore_x') -> the same server, database restore_x.

    A URL stays a URL, so applications that only read URLs (SUPABASE_DB_URL) can use the result."""
    if "://" in dsn:
        head, _, rest = dsn.partition("://")
        netloc, _, path = rest.partition("/")
        query = ""
        if "?" in path:
            path, _, query = path.partition("?")
        return f"{head}://{netloc}/{database}" + (f"?{query}" if query else "")
    _need_psycopg()
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo(**params)


def mask_dsn(dsn):
    """The connection string with its password replaced by ********."""
    _need_psycopg()
    params = conninfo_to_dict(dsn)
    if "password" not in params:
        return dsn
    if "://" in dsn:
        head, _, rest = dsn.partition("://")
        userinfo, at, hostpart = rest.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return f"{head}://{user}:********{at}{hostpart}"
    params["password"] = "********"  # noqa: S105 - the mask, not a password
    return make_conninfo(**params)


def project_db_url(template, project, password):
    """The connection string of a hosted project (pgdr.supabase.supabase_project's result.project) from a template
    with {ref}, {host}, {region} and {password}: the one the module itself connected with."""
    return render_template(template, project, password)


class FilterModule:
    def filters(self):
        return {"dsn_database": dsn_database, "mask_dsn": mask_dsn, "project_db_url": project_db_url}
