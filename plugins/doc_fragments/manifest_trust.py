class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  manifest_public_keys:
    description:
      - Trusted public keys of the manifest signing key (C(ed25519:<base64 of the 32 raw bytes>) or PEM), from the
        inventory (C(pgdr_manifest_public_keys)); list the old and the new key while rotating.
      - The manifest's signature is verified with them before any object of the backup is read, and every object
        key must lie inside the backup's own folder. A manifest whose signature does not verify is refused; so is an
        unsigned one, unless O(allow_unsigned) names it.
    type: list
    elements: str
    default: []
  allow_unsigned:
    description:
      - The id of one unsigned backup to accept anyway (one taken before manifest signing was set up), a named
        override, C(-e allow_unsigned_backup=<backup id>) in C(restore.yml). Its object keys are still confined to
        its folder, and the result says C(unsigned, allowed by allow_unsigned=<id>).
    type: str
"""
