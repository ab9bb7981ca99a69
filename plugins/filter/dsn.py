# Copyright: the pgdr authors. GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for connection strings, each the engine's own helper (module_utils/pg.py, hosted_project.py): the
restored database's connection string from a restore module's result, a connection string pointed at another
database, one masked for display, and a hosted project's."""

from ansible.errors import AnsibleFilterError

from ansible_collections.pgdr.supabase.plugins.module_utils import pg
from ansible_collections.pgdr.supabase.plugins.module_utils.hosted_project import render_template

# What Ansible puts in a module's result where a no_log option's whole value stood.
NO_LOG_PLACEHOLDER = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def _need_psycopg():
    if not pg.HAS_PSYCOPG:
        raise AnsibleFilterError(
            "the pgdr.supabase dsn filters need psycopg on the controller: install the collection's requirements "
            "(meta/ee-requirements.txt) into the Python that runs Ansible"
        )


def restored_dsn(restore, dsn=None, password=None):
    """restore_result.restore | restored_dsn(dsn=target_dsn) -> the restored database's connection string.

    A module's result is printed, so its restore.dsn carries the password masked; this puts back the password
    given, or the one of dsn (the connection string the restore was given). Set the fact it goes into no_log."""
    masked = (restore or {}).get("dsn") or ""
    if not masked:
        return ""
    if masked == NO_LOG_PLACEHOLDER:  # the restored database is the one given (a restore in place)
        return dsn or ""
    _need_psycopg()
    return pg.unmask(masked, password=password, dsn=dsn)


def dsn_database(dsn, database):
    """postgresql://u:p@h:5432/postgres | dsn_database('restore_x') -> the same server, database restore_x.

    A URL stays a URL, so applications that only read URLs (SUPABASE_DB_URL) can use the result."""
    _need_psycopg()
    return pg.with_database(dsn, database)


def mask_dsn(dsn):
    """The connection string with its password replaced by ********."""
    _need_psycopg()
    return pg.mask_password(dsn)


def project_db_url(template, project, password):
    """The connection string of a hosted project (pgdr.supabase.supabase_project's result.project) from a template
    with {ref}, {host}, {region} and {password}: the one the module itself connected with."""
    return render_template(template, project, password)


class FilterModule:
    def filters(self):
        return {
            "restored_dsn": restored_dsn,
            "dsn_database": dsn_database,
            "mask_dsn": mask_dsn,
            "project_db_url": project_db_url,
        }
