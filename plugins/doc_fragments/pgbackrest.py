class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  repo:
    description:
      - The pgBackRest repository (C(repo1)) on S3. Secrets belong in a vault file or come from a lookup; they reach
        pgBackRest through its configuration file (mode 600, owner postgres) or its environment, never a command line.
    type: dict
    required: true
    suboptions:
      bucket:
        description: Bucket holding the repository.
        type: str
        required: true
      endpoint:
        description:
          - S3 host name, without scheme or port, for example V(s3.eu-west-1.amazonaws.com) or V(localhost).
          - pgBackRest speaks HTTPS only and matches the certificate by host name (not by IP address).
        type: str
        required: true
      port:
        description: HTTPS port of the endpoint.
        type: int
        default: 443
      region:
        description: Region used for signing.
        type: str
        default: us-east-1
      access_key:
        description: Access key id. Never logged.
        type: str
        required: true
      secret_key:
        description: Secret access key. Never logged.
        type: str
        required: true
      ca_file:
        description: CA bundle that signs the endpoint's certificate (a private CA). Must be readable by postgres.
        type: path
      verify_tls:
        description: Verify the endpoint's certificate. Leave on outside throwaway tests.
        type: bool
        default: true
      uri_style:
        description: V(path) (bucket in the path; S3-compatible servers) or V(host) (bucket in the host name).
        type: str
        default: path
        choices: [path, host]
      path:
        description: Folder of the repository in the bucket, for example V(/pgbackrest/production).
        type: str
        required: true
      cipher_type:
        description: Client-side encryption of everything in the repository.
        type: str
        default: aes-256-cbc
        choices: [aes-256-cbc, none]
      cipher_pass:
        description:
          - Passphrase of the repository encryption; required unless O(repo.cipher_type=none). Never logged.
          - Keep it outside the repository it protects; without it no backup can be restored.
        type: str
  stanza:
    description: Name of the pgBackRest stanza (one per cluster), for example V(production).
    type: str
    required: true
"""
