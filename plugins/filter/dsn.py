# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for connection strings: point one at another database, and mask its password for display."""

from psycopg.conninfo import conninfo_to_dict, make_conninfo


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
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo(**params)


def mask_dsn(dsn):
    """The connection string with its password replaced by ********."""
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


class FilterModule:
    def filters(self):
        return {"dsn_database": dsn_database, "mask_dsn": mask_dsn}
