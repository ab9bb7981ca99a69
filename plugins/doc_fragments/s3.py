"""The S3 connection options: O(s3), and the same keys for every other bucket option (primary_s3.py,
secondary_s3.py). One text, so a key documented here is documented the same for every bucket."""

_SUBOPTIONS = r"""
    suboptions:
      bucket:
        description: Bucket holding the backups.
        type: str
        required: true
      endpoint_url:
        description:
          - S3 endpoint, for example V(https://s3.eu-west-1.amazonaws.com) or the sandbox's SeaweedFS.
          - Omit for AWS's default endpoint of O({name}.region).
        type: str
      region:
        description: Region used for signing.
        type: str
        default: us-east-1
      access_key:
        description: Access key id. Omit to use the host's AWS credential chain (instance role, environment).
        type: str
      secret_key:
        description: Secret access key. Never logged.
        type: str
      session_token:
        description: Session token of temporary credentials. Never logged.
        type: str
      ca_bundle:
        description: CA certificate file to verify the endpoint's TLS certificate with (a private CA).
        type: path
      validate_certs:
        description: Verify the endpoint's TLS certificate. Turn off only for a throwaway test endpoint.
        type: bool
        default: true
      checksums:
        description:
          - When boto3 adds its own CRC checksums to requests and checks them in responses.
          - V(when_required) (the default) sends only the SHA-256 checksums this module computes, which every
            S3-compatible server tested accepts; V(when_supported) is boto3's own default since 1.36.
        type: str
        default: when_required
        choices: [when_required, when_supported]
      sse:
        description:
          - Server-side encryption asked for every object written (encryption at rest on the bucket's side).
          - Client-side encryption (the bucket owner cannot read the dumps) is
            O(pgdr.supabase.logical_backup#module:encryption_recipients) of the backup module.
        type: dict
        suboptions:
          algorithm:
            description: V(AES256) (SSE-S3) or V(aws:kms) (SSE-KMS).
            type: str
            choices: [AES256, "aws:kms"]
          kms_key_id:
            description: KMS key id or alias for V(aws:kms); omit for the account's default key.
            type: str
"""


def s3_option(name, description, required=False):
    """The YAML of one S3 bucket option: its name, description lines, required or not, and the shared keys."""
    lines = [f"  {name}:", "    description:"] + [f"      - {line}" for line in description]
    lines += ["    type: dict"] + (["    required: true"] if required else [])
    return "\n".join(lines) + _SUBOPTIONS.replace("{name}", name)


class ModuleDocFragment:
    DOCUMENTATION = "options:\n" + s3_option(
        "s3",
        ["Where the backups live. Secrets belong in a vault file or come from a lookup, never in plain inventory."],
        required=True,
    )
