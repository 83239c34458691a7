"""Throw-away certificates for TLS tests, made with the `openssl` command: a CA, a server certificate for
127.0.0.1 and a client certificate whose key is encrypted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT_KEY_PASSWORD = "client-key-pw"
_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def make_pki(directory: Path, ca_name: str = "test-ca") -> dict[str, Path]:
    """Write `ca.pem`, `server.pem` (unencrypted PKCS#8 key, then certificate: a PEM keystore for Kafka),
    `client.pem` and `client.key` (encrypted with `CLIENT_KEY_PASSWORD`) into `directory`.

    Skips the calling test when `openssl` is missing.
    """
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", *_EC, "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={ca_name}")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("req", *_EC, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    sign = ("-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2")
    run("x509", "-req", "-in", "server.csr", *sign, "-extfile", "server.ext", "-out", "server.crt")
    (directory / "server.pem").write_text(
        (directory / "server.key").read_text() + (directory / "server.crt").read_text()
    )
    run(
        "req", *_EC, "-keyout", "client.key", "-passout", f"pass:{CLIENT_KEY_PASSWORD}", "-out", "client.csr",
        "-subj", "/CN=sms-consumer",
    )  # fmt: skip
    run("x509", "-req", "-in", "client.csr", *sign, "-out", "client.pem")
    return {name: directory / name for name in ("ca.pem", "server.pem", "client.pem", "client.key")}
