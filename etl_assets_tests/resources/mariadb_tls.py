"""A throwaway MariaDB that accepts TLS connections only, with its own CA, for the TLS tests.

The server's certificate names `localhost` only (no IP address), so a client that verifies host
names accepts it at `localhost` and refuses it at `127.0.0.1`: the wrong-name case, one server.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MARIADBD = "/usr/sbin/mariadbd"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15
USER, PASSWORD, DATABASE = "etl", "tls-test-pw", "etl"
X509_USER = "etl_x509"  # a user that must present a client certificate


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


@dataclass(frozen=True)
class _Issued:
    pem: Pem
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(
    folder: Path, name: str, common_name: str, issuer: _Issued | None = None, san: list[x509.GeneralName] | None = None
) -> _Issued:
    """A certificate for `common_name`, written to `folder`: a CA signing itself when `issuer` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .issuer_name(issuer.cert.subject if issuer else subject)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    pem = Pem(folder / f"{name}.crt", folder / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return _Issued(pem, cert, key)


@dataclass(frozen=True)
class Certificates:
    ca: Pem  # signed the server's and the client's certificates
    other_ca: Pem  # signed neither
    server: Pem  # for localhost only
    client: Pem


def make_certificates(folder: Path) -> Certificates:
    ca = _issue(folder, "ca", "etl test CA")
    other_ca = _issue(folder, "other_ca", "some other CA")
    server = _issue(folder, "server", "localhost", ca, [x509.DNSName("localhost")])
    client = _issue(folder, "client", X509_USER, ca)
    return Certificates(ca.pem, other_ca.pem, server.pem, client.pem)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TlsMariaDB:
    """`mariadbd` on a free port of 127.0.0.1 with --require-secure-transport, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.certs = make_certificates(folder)
        self.port = _free_port()
        self.socket = folder / "sock"
        self.log = folder / "server.log"
        self.process: subprocess.Popen | None = None

    def url(self, host: str = "localhost") -> str:
        """The URL without its password, which the tests give as the secret ETL_DATABASE_PASSWORD."""
        return f"mysql+pymysql://{USER}@{host}:{self.port}/{DATABASE}"

    def _failed(self, what: str) -> AssertionError:
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "(no log)"
        return AssertionError(f"the TLS MariaDB {what}; its log:\n{log}")

    def start(self) -> TlsMariaDB:
        datadir = self.folder / "data"
        as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses to run as root without it
        install = subprocess.run(
            [
                shutil.which("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *as_root,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if install.returncode:
            raise AssertionError(f"mariadb-install-db failed:\n{install.stdout}\n{install.stderr}")
        self.process = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self.folder / 'mariadbd.pid'}",
                f"--log-error={self.log}",
                f"--ssl-ca={self.certs.ca.cert}",
                f"--ssl-cert={self.certs.server.cert}",
                f"--ssl-key={self.certs.server.key}",
                "--require-secure-transport=ON",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
                *as_root,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._setup(self._wait_for_socket())
        return self

    def _wait_for_socket(self) -> pymysql.Connection:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise self._failed(f"exited with status {self.process.returncode}")
            try:  # the unix socket counts as a secure transport, so root logs in without TLS
                return pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=2)
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise self._failed(f"did not answer within {START_TIMEOUT_S}s") from None
                time.sleep(0.1)

    @staticmethod
    def _setup(root: pymysql.Connection) -> None:
        with root, root.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
            cursor.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL")
            cursor.execute(f"CREATE USER '{X509_USER}'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE X509")
            for user in (USER, X509_USER):
                cursor.execute(f"GRANT ALL ON {DATABASE}.* TO '{user}'@'%'")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)


def plaintext_login_error(server: TlsMariaDB) -> str | None:
    """What the server says to a login over TCP without TLS (None: it let it in)."""
    try:
        pymysql.connect(
            host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, ssl_disabled=True, connect_timeout=5
        ).close()
    except pymysql.err.OperationalError as exc:
        return str(exc)
    return None
