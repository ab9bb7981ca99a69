# The options pgdr.supabase.storage_backup and pgdr.supabase.storage_restore document alike. Each module documents
# its own description of O(storage) (which way the copy goes): a module's option is merged over the fragment's key
# by key, so the module's description replaces this one and the type, required and suboptions stay.
class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  storage:
    description: The Storage service's S3 endpoint and keys. Keys from the vault.
    type: dict
    required: true
    suboptions:
      endpoint_url:
        description: S3 endpoint of the Storage service.
        type: str
      region:
        description: Region used for signing (the project's region for Supabase).
        type: str
        default: us-east-1
      access_key:
        description: Access key id. Never logged.
        type: str
      secret_key:
        description: Secret access key. Never logged.
        type: str
      session_token:
        description: Session token of temporary credentials. Never logged.
        type: str
      ca_bundle:
        description: CA certificate file to verify the endpoint's TLS certificate with.
        type: path
      validate_certs:
        description: Verify the endpoint's TLS certificate.
        type: bool
        default: true
      checksums:
        description:
          - When boto3 adds its own CRC checksums to requests and checks them in responses. V(when_required) is
            what S3-compatible servers accept; V(when_supported) is boto3's own default since 1.36.
        type: str
        default: when_required
        choices: [when_required, when_supported]
  fail_on_missing:
    description: Fail when the cross-check finds objects referenced in the database but missing from the backup.
    type: bool
    default: false
  plan_limit:
    description: At most this many objects are listed in the plan and the cross-check (the counts are complete).
    type: int
    default: 100
"""
