from ansible_collections.pgdr.supabase.plugins.doc_fragments.s3 import s3_option


class ModuleDocFragment:
    DOCUMENTATION = "options:\n" + s3_option(
        "primary_s3",
        [
            "The primary backup bucket, the same keys as O(s3); read only for the secure-copy records that backups "
            "secured before the locked bucket kept its own record have there. Omit when the primary bucket is gone."
        ],
    )
