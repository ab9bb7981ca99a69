class ModuleDocFragment:
    # The connection to the Management API (token, URL, timeout).
    DOCUMENTATION = r"""
options:
  token:
    description:
      - Management API personal access token (C(sbp_) and 40 hex digits). From a vault file or a lookup; never logged.
    type: str
    required: true
  api_url:
    description: Base URL of the Management API (the sandbox's stand-in in the local inventory).
    type: str
    default: https://api.supabase.com
  timeout:
    description: Seconds each HTTP request may take.
    type: int
    default: 30
"""

    # The project a module is about (pgdr.supabase.supabase_api.project).
    PROJECT = r"""
options:
  project_ref:
    description: Project ref, exactly 20 lowercase letters.
    type: str
    required: true
"""
