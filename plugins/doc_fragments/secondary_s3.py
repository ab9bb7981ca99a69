from ansible_collections.pgdr.supabase.plugins.doc_fragments.s3 import s3_option

_DESCRIPTION = ["The immutable (Object Lock) bucket, the same keys as O(s3). Secrets from a vault file or a lookup."]


class ModuleDocFragment:
    # pgdr.supabase.secondary_s3: the locked bucket as an optional option.
    DOCUMENTATION = "options:\n" + s3_option("secondary_s3", _DESCRIPTION)
    # pgdr.supabase.secondary_s3.required: the same, for a module that works on the locked bucket.
    REQUIRED = "options:\n" + s3_option("secondary_s3", _DESCRIPTION, required=True)
