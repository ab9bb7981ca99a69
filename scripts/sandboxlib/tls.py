"""A self-signed CA and a server certificate for 127.0.0.1/localhost, made once with the openssl CLI."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from .common import install_dir, run, timed

SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {names}
"""
SANDBOX_NAMES = "IP:127.0.0.1, DNS:localhost"


def ensure_tls(state: dict) -> None:
    """Create the CA and server certificate unless they exist; put a CA copy where postgres can read it."""
    tls = state["tls"]
    folder = Path(tls["dir"])
    cert, key = Path(tls["cert_file"]), Path(tls["key_file"])
    if not cert.exists():
        with timed("tls: certificate authority and server certificate"):
            install_dir(folder, mode="755")
            ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
            csr, ext = folder / "server.csr", folder / "server.ext"
            # Written under a temporary name first: the certificate's presence means "TLS is complete".
            tmp = folder / "server.crt.tmp"
            ext.write_text(SERVER_EXTENSIONS.format(names=SANDBOX_NAMES))
            ca_extensions = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]
            new_key = ["-newkey", "rsa:2048", "-nodes"]
            # fmt: off
            run(["openssl", "req", "-x509", *new_key, "-days", "3650", "-subj", "/CN=pgdr sandbox CA", *ca_extensions,
                 "-keyout", ca_key, "-out", ca_crt])
            run(["openssl", "req", "-new", *new_key, "-subj", "/CN=localhost", "-keyout", key, "-out", csr])
            run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-days", "825",
                 "-set_serial", "0x" + secrets.token_hex(8), "-extfile", ext, "-out", tmp])
            # fmt: on
            csr.unlink()
            ext.unlink()
            for private in (ca_key, key):
                private.chmod(0o600)
            ca_crt.chmod(0o644)
            tmp.chmod(0o644)
            tmp.rename(cert)
    ca_copy = Path(tls["ca_file"])
    if not ca_copy.exists():
        install_dir(ca_copy.parent, mode="755")
        shutil.copyfile(folder / "ca.crt", ca_copy)
        ca_copy.chmod(0o644)


def issue_server_cert(state: dict, address: str, folder: Path) -> dict:
    """A server certificate for one loopback address (a provisioned project's), signed by the sandbox CA, so
    that clients verify it with the sandbox's CA file (sslmode=verify-full). Returns {cert_file, key_file}."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = Path(state["tls"]["dir"])
    key, csr, ext, cert = folder / "server.key", folder / "server.csr", folder / "server.ext", folder / "server.crt"
    ext.write_text(SERVER_EXTENSIONS.format(names=f"IP:{address}"))
    # An EC key: made in milliseconds, where RSA takes a noticeable part of a project's provisioning.
    # fmt: off
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={address}", "-keyout", key, "-out", csr])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca / "ca.crt", "-CAkey", ca / "ca.key", "-days", "825",
         "-set_serial", "0x" + secrets.token_hex(8), "-extfile", ext, "-out", cert])
    # fmt: on
    csr.unlink()
    ext.unlink()
    key.chmod(0o600)
    return {"cert_file": str(cert), "key_file": str(key)}
