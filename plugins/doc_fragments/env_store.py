"""The env store option: O(store) (pgdr.supabase.env, pgdr.supabase.promote), and the same keys under
O(stores[].store) of pgdr.supabase.config_snapshot. One text, so a key is documented the same wherever a store is."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  store:
    description:
      - The environment store holding the variables. Secrets in it (AWS keys, hook environment) belong in a vault
        file or come from a lookup; they are never logged.
    type: dict
    required: true
    suboptions:
      type:
        description:
          - V(dotenv) a file of C(NAME=value) lines (comments, order and other lines kept byte for byte; atomic
            write; mode kept, 600 for a new file).
          - V(ssm) AWS SSM Parameter Store, variable C(NAME) is parameter C(<prefix>/NAME) (SecureString).
          - V(secretsmanager) AWS Secrets Manager, ONE secret holding a JSON object of C(NAME) to value.
          - V(command) a hook for any other store; the value goes on stdin, never on a command line.
        type: str
        required: true
        choices: [dotenv, ssm, secretsmanager, command]
      path:
        description: The dotenv file (V(dotenv)). A missing file reads as empty; its folder must exist.
        type: path
      prefix:
        description: Path prefix of the parameters (V(ssm)), for example V(/myapp/production).
        type: str
      secret_id:
        description: Name or ARN of the secret (V(secretsmanager)); created on the first write when missing.
        type: str
      kms_key_id:
        description: KMS key for SecureString parameters or a new secret. Default the AWS-managed key.
        type: str
      secure:
        description: Write SSM parameters as SecureString (V(true)) or String.
        type: bool
        default: true
      region:
        description: AWS region (V(ssm), V(secretsmanager)). Default V(us-east-1).
        type: str
      endpoint_url:
        description: AWS endpoint, for a VPC endpoint or a test server. Default AWS's endpoint of the region.
        type: str
      access_key:
        description: Access key id. Omit to use the host's AWS credential chain.
        type: str
      secret_key:
        description: Secret access key. Never logged.
        type: str
      session_token:
        description: Session token of temporary credentials. Never logged.
        type: str
      ca_bundle:
        description: CA certificate file to verify the AWS endpoint with.
        type: path
      validate_certs:
        description: Verify the endpoint's TLS certificate.
        type: bool
        default: true
      connect_timeout:
        description: Seconds to wait for a connection to the AWS endpoint.
        type: int
        default: 5
      max_attempts:
        description: Attempts per AWS call (retries on throttling and transient errors only).
        type: int
        default: 3
      get:
        description:
          - Argument vector printing a variable's value (V(command)); the name is appended, or replaces C({name}).
          - Exit 0 with the value on stdout, or O(store.absent_rc) when the variable is not set.
        type: list
        elements: str
      set:
        description: Argument vector setting a variable (V(command)); the name is appended, the value is on stdin.
        type: list
        elements: str
      delete:
        description: Argument vector removing a variable (V(command)); needed only to roll back an added name.
        type: list
        elements: str
      absent_rc:
        description: Exit code of O(store.get) meaning "not set".
        type: int
        default: 3
      env:
        description: Extra environment for the hooks (tokens, for example). Never logged.
        type: dict
      timeout:
        description: Seconds a hook may run.
        type: int
        default: 60
"""


def _store_keys(extra_indent, path):
    """The store's suboptions as DOCUMENTATION has them, indented ``extra_indent`` more and with O(store.<key>)
    references made O(<path>.<key>)."""
    block = ModuleDocFragment.DOCUMENTATION[ModuleDocFragment.DOCUMENTATION.index("    suboptions:\n") :]
    lines = [" " * extra_indent + line if line.strip() else line for line in block.splitlines()]
    return "\n".join(lines).replace("O(store.", f"O({path}.") + "\n"


# pgdr.supabase.env_store.snapshot_stores: pgdr.supabase.config_snapshot's O(stores), a list of stores, each with the
# keys of O(store). Set here rather than in the class body: it is built from DOCUMENTATION (which yamllint checks).
ModuleDocFragment.SNAPSHOT_STORES = """
options:
  stores:
    description: The env stores to snapshot.
    type: list
    elements: dict
    required: true
    suboptions:
      label:
        description: Name of the store in the snapshot. Default a description of the store without secrets.
        type: str
      names:
        description:
          - Variables to record. Empty for every variable the store holds (dotenv, ssm, secretsmanager can list;
            a command store cannot).
        type: list
        elements: str
        default: []
      store:
        description:
          - The store's settings, as the O(ignore:store) option of M(pgdr.supabase.env). Secrets in it are never
            logged.
        type: dict
        required: true
""" + _store_keys(4, "stores[].store")
