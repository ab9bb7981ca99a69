"""Stand-in for the pip bootstrap script ansible-test downloads (get-pip.py), which this machine cannot reach.

ansible-test runs it with a new virtual environment's Python as `get_pip.py [pip options] pip==<version>
[--no-setuptools] [--no-wheel]`. It installs the pip bundled with Python (ensurepip, no network), then lets that
pip install the exact pip ansible-test asked for from the package index. tests/sanity/run.py copies it to the
path ansible-test looks at first (~/.ansible/test/cache/get_pip_<version>.py, under run.py's own HOME).
"""

import ensurepip
import os
import ssl
import subprocess
import sys

# pip 23 does not know these options of get-pip.py; setuptools and wheel are not installed anyway.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}
DEBIAN_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def machine_ca_bundle():
    """Return the machine's CA bundle file (ansible-test passes no SSL_CERT_FILE or PIP_CERT through), or None."""
    candidates = (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile)
    return next((path for path in (*candidates, DEBIAN_CA_BUNDLE) if path and os.path.isfile(path)), None)


def main():
    """Bootstrap pip, then install the requested packages with it."""
    ensurepip.bootstrap(upgrade=True)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    command = [sys.executable, "-m", "pip", "install"]
    cert = machine_ca_bundle()
    if cert:
        # The bundled pip trusts only its own certificates, not the machine's CA bundle on the way to the index.
        command += ["--cert", cert]
    subprocess.run(command + args, check=True)


if __name__ == "__main__":
    main()
