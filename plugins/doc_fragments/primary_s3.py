class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  primary_s3:
    description:
      - The primary backup bucket, the same keys as O(s3); read only for the secure-copy records that backups secured
        before the locked bucket kept its own record have there. Omit when the primary bucket is gone.
    type: dict
    suboptions:
      bucket:
        description: Bucket holding the backups.
        type: str
        required: true
      endpoint_url:
        description:
          - S3 endpoint, for example V(https://s3.eu-west-1.amazonaws.com) or the sandbox's SeaweedFS.
          - Omit for AWS's default endpoint of O(primary_s3.region).
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
          - Client-side encryption (the bucket owner cannot read the dumps) is O(encryption_recipients) of the
            backup module.
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
