class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  command:
    description: A command to run as one more check, as a list (program and arguments; no shell).
    type: list
    elements: str
    default: []
  command_cwd:
    description: Working folder of O(command).
    type: path
  command_timeout:
    description: Seconds O(command) may take before it counts as failed.
    type: int
    default: 600
"""
