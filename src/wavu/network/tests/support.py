"""A real FreeRADIUS for tests: started with the configuration `wavu radius-config` generates, on the
test database, spoken to with pyrad like a router would.

    with running_freeradius(tmp_path, database=radius_database(tmp_path)) as radius:
        reply = radius.authenticate("10008", "secret", method="chap")
        assert reply.accepted and reply["Mikrotik-Rate-Limit"] == "5M/10M"

FreeRADIUS is Debian's `freeradius` package (3.2); `.ci/run` installs it when missing. Without it the
tests that need it are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from wavu.network import radius_config
from wavu.network.dictionary import dictionary
from wavu.network.projection import RadiusPolicy

NAS_SECRET = "wavu-test-secret-0123456789"
STARTUP_SECONDS = 20


def require_freeradius() -> str:
    """The FreeRADIUS binary, or skip the test with the reason."""
    binary = radius_config.freeradius_binary()
    if binary is None:
        pytest.skip("FreeRADIUS 3.2 is not installed (Debian: apt-get install freeradius freeradius-postgresql)")
    return binary


def free_udp_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def radius_database(tmp_path: Path) -> dict:
    """The DATABASES entry FreeRADIUS should use for the test database.

    PostgreSQL: the test database itself (tests must commit: `transactional_db`). SQLite: pytest-django's
    test database lives in memory, which another process cannot open, so it is copied with SQLite's
    online backup into a file (the same migrated schema and rows); call `copy_sqlite_test_database`
    again after writing rows FreeRADIUS must see."""
    settings = dict(connection.settings_dict)
    if connection.vendor == "sqlite":
        settings["NAME"] = str(tmp_path / "wavu-test.sqlite3")
        copy_sqlite_test_database(settings["NAME"])
    return settings


def copy_sqlite_test_database(path: str) -> None:
    """SQLite only: copy the (in-memory) test database to the file FreeRADIUS reads."""
    if connection.vendor != "sqlite":
        return
    connection.ensure_connection()
    target = sqlite3.connect(path)
    try:
        connection.connection.backup(target)
    finally:
        target.close()


def fetch(database: dict, sql: str) -> list[tuple]:
    """Rows as FreeRADIUS left them: from the test database (PostgreSQL) or the file copy it used (SQLite)."""
    if connection.vendor == "sqlite":
        with contextlib.closing(sqlite3.connect(database["NAME"])) as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]


@dataclass
class Reply:
    code: int
    attributes: dict

    @property
    def accepted(self) -> bool:
        return self.code == 2  # Access-Accept

    @property
    def rejected(self) -> bool:
        return self.code == 3  # Access-Reject

    def __getitem__(self, name):
        return self.attributes[name]

    def get(self, name, default=None):
        return self.attributes.get(name, default)


class FreeRadius:
    """A FreeRADIUS process on free ports; `authenticate` sends an Access-Request as a router would."""

    def __init__(self, directory: Path, auth_port: int, acct_port: int, process: subprocess.Popen, log: Path):
        self.directory, self.auth_port, self.acct_port = directory, auth_port, acct_port
        self.process, self.log = process, log

    def client(self, secret: str = NAS_SECRET, *, timeout: float = 3, retries: int = 1):
        from pyrad.client import Client

        return Client(
            server="127.0.0.1",
            authport=self.auth_port,
            acctport=self.acct_port,
            secret=secret.encode(),
            dict=dictionary(),
            retries=retries,
            timeout=timeout,
            enforce_ma=True,
        )

    def authenticate(
        self,
        username: str,
        password: str,
        *,
        method: str = "pap",
        message_authenticator: bool = True,
        secret: str = NAS_SECRET,
        timeout: float = 3,
    ) -> Reply:
        """One Access-Request with PAP or CHAP (as MikroTik's hotspot sends it); the reply with its
        attributes decoded (each attribute → its value, or a list when it occurs more than once)."""
        from pyrad import packet

        client = self.client(secret, timeout=timeout)
        request = client.CreateAuthPacket(
            code=packet.AccessRequest, User_Name=username, message_authenticator=message_authenticator
        )
        request["NAS-IP-Address"] = "127.0.0.1"
        request["NAS-Identifier"] = "wavu-test-nas"
        request["Calling-Station-Id"] = "AA:BB:CC:DD:EE:01"
        if method == "pap":
            request["User-Password"] = request.PwCrypt(password)
        elif method == "chap":
            challenge, chap_id = secrets.token_bytes(16), secrets.token_bytes(1)
            request["CHAP-Challenge"] = challenge
            request["CHAP-Password"] = chap_id + hashlib.md5(chap_id + password.encode() + challenge).digest()  # noqa: S324 - CHAP is MD5 by definition
        else:
            raise ValueError(f"unknown method {method!r}")
        answer = client.SendPacket(request)
        values = {}
        for key in answer.keys():  # noqa: SIM118 - pyrad's keys() gives attribute names, iteration raw codes
            found = answer[key]
            values[key] = found[0] if len(found) == 1 else list(found)
        return Reply(code=answer.code, attributes=values)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def running_freeradius(tmp_path: Path, *, database: dict, policy: RadiusPolicy | None = None, **options):
    """Generate the configuration into `tmp_path/raddb` (as `wavu radius-config` does, routers from
    the NAS registry) and run `freeradius -f -X` on it until the block ends."""
    binary = require_freeradius()
    auth_port, acct_port = free_udp_ports(2)
    directory = tmp_path / "raddb"
    options.setdefault("reject_delay", 0)
    config = radius_config.config_for(
        directory,
        database=database,
        policy=policy or RadiusPolicy(),
        auth_port=auth_port,
        acct_port=acct_port,
        listen_address="127.0.0.1",
        **options,
    )
    radius_config.write(config)
    log = tmp_path / "freeradius.log"
    env = {**os.environ, "TZ": "Africa/Nairobi"}  # the server's clock zone must not matter
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-f", "-X", "-d", str(directory)], stdout=out, stderr=subprocess.STDOUT,
                                   env=env)  # fmt: skip
    server = FreeRadius(directory, auth_port, acct_port, process, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while "Ready to process requests" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"FreeRADIUS did not start (exit {process.poll()}):\n{server.log_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
