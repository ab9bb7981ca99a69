class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  stanza:
    description: The stanza, as in the configuration file.
    type: str
    required: true
  config_file:
    description: pgBackRest configuration file written by M(pgdr.supabase.pgbackrest_stanza).
    type: path
    required: true
"""
