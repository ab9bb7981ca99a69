# The engine of the backup and restore runbooks: plain Python (psycopg, boto3, zstandard, subprocess).
# Ansible modules in plugins/modules are thin faces over it; tests call it directly.
