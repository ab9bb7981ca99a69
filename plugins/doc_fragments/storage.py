# The options pgdr.supabase.storage_backup and pgdr.supabase.storage_restore document alike. The storage option
# itself stays in each module: its suboptions are the same, but its description says which way the copy goes, and
# a fragment's option is replaced whole (not merged) by a module's option of the same name.
class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  fail_on_missing:
    description: Fail when the cross-check finds objects referenced in the database but missing from the backup.
    type: bool
    default: false
  plan_limit:
    description: At most this many objects are listed in the plan and the cross-check (the counts are complete).
    type: int
    default: 100
"""
