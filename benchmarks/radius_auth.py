"""Benchmark: Access-Requests per second through FreeRADIUS on Wavu's tables, against the same
FreeRADIUS answering from a flat users file, in the same run.

`radius_bench(pg_url, …)` (called by benchmarks/run.py, `--bench radius`):

1. builds a fresh PostgreSQL database `wavu_bench_radius`, migrates it and seeds it with
   `wavu seed-demo --customers 100000 --months 0 --postpaid-only` (no history: about a minute);
2. `python benchmarks/radius_auth.py setup` (inside the app): makes every seeded service active
   (the seed gives some of them other statuses), registers 127.0.0.1 as a NAS and projects every
   service into `radcheck`/`radreply` with `network.writer.reconcile()` (set-based, timed);
3. checks with EXPLAIN that FreeRADIUS's stock authorize queries are index lookups;
4. writes the configuration with `wavu radius-config --out DIR` (checked by `freeradius -C`), and a
   copy of it whose authorize uses the `files` module with a flat users file holding the same users
   with the same check and reply attributes read back from `radcheck`/`radreply` (no sql anywhere:
   clients from a `client` section, accounting, session and post-auth do nothing);
5. runs Debian's FreeRADIUS 3.2 (threaded, `freeradius -f`, no debug) on each configuration in turn
   (never both at once) and fires the same pre-built PAP Access-Requests at it: a warm-up, then
   `requests` packets for random users at a fixed number of outstanding requests (`concurrency`);
   about 1 % carry a wrong password and must be rejected.

The client is one Python thread with epoll over `concurrency` UDP sockets (one outstanding request
per socket, its RADIUS id cycling so an id comes back only after 256 requests, beyond FreeRADIUS's
duplicate-detection window). Every packet is built before the clock starts (User-Password hidden
per RFC 2865, Message-Authenticator first, HMAC-MD5), so sending costs a `send` and receiving a
`recv`, an MD5 of the Response Authenticator and a byte search for the user's own
`Mikrotik-Rate-Limit`. Its CPU time is measured and reported (it shares the 2 cores with FreeRADIUS
and PostgreSQL). Reported per server: requests/s, p50/p99/max latency, Accepts, Rejects, lost
requests, answers failing verification; and the ratio of the SQL server's rate to the files
server's. Target (2-core machine): ≥ 2,000 authentications/s with p99 < 20 ms on Wavu's tables.
Written to var/bench/radius-auth-<timestamp>.json by run.py.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import re
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_RATE = 2000  # Access-Requests per second, 2-core machine
TARGET_P99_MS = 20.0
NAS_SECRET = "wavu-bench-nas-secret-0123456789"
WRONG_PASSWORD_SHARE = 0.01

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
USER_NAME, USER_PASSWORD, NAS_IP_ADDRESS, NAS_PORT, CALLING_STATION_ID, NAS_IDENTIFIER = 1, 2, 4, 5, 31, 32
NAS_PORT_TYPE, MESSAGE_AUTHENTICATOR, VENDOR_SPECIFIC = 61, 80, 26
MIKROTIK_VENDOR, MIKROTIK_RATE_LIMIT = 14988, 8


# --- RFC 2865 packets, built by hand so that the client costs little -----------------------------


def _attr(kind: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError("a RADIUS attribute holds at most 253 bytes")
    return bytes((kind, len(value) + 2)) + value


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """User-Password as RFC 2865 §5.2 hides it: padded to 16 bytes, each block XORed with
    MD5(secret + previous block), the first with the Request Authenticator."""
    padded = password + b"\0" * (-len(password) % 16 or (16 if not password else 0))
    out, previous = b"", authenticator
    for start in range(0, len(padded), 16):
        key = hashlib.md5(secret + previous).digest()  # noqa: S324 - RADIUS defines it with MD5
        block = bytes(a ^ b for a, b in zip(padded[start : start + 16], key, strict=True))
        out += block
        previous = block
    return out


def access_request(ident: int, username: str, password: str, secret: bytes, authenticator: bytes) -> bytes:
    """A PAP Access-Request as a MikroTik PPPoE server sends it, Message-Authenticator first."""
    attributes = (
        _attr(MESSAGE_AUTHENTICATOR, b"\0" * 16)
        + _attr(USER_NAME, username.encode())
        + _attr(USER_PASSWORD, hide_password(password.encode(), secret, authenticator))
        + _attr(NAS_IP_ADDRESS, socket.inet_aton("127.0.0.1"))
        + _attr(NAS_IDENTIFIER, b"wavu-bench")
        + _attr(NAS_PORT, struct.pack("!I", ident))
        + _attr(NAS_PORT_TYPE, struct.pack("!I", 15))  # Ethernet (PPPoE)
        + _attr(CALLING_STATION_ID, b"AA:BB:CC:00:%02X:%02X" % (ident, len(username)))
    )
    unsigned = struct.pack("!BBH", ACCESS_REQUEST, ident, 20 + len(attributes)) + authenticator + attributes
    signature = hmac.new(secret, unsigned, hashlib.md5).digest()
    return unsigned[:22] + signature + unsigned[38:]


def answer_code(data: bytes, ident: int, authenticator: bytes, secret: bytes) -> int:
    """The answer's code when it is a well-formed answer to the request (`ident`, `authenticator`)
    signed with `secret` (Response Authenticator, RFC 2865 §3), else 0."""
    if len(data) < 20 or data[1] != ident:
        return 0
    length = struct.unpack_from("!H", data, 2)[0]
    if length > len(data):
        return 0
    expected = hashlib.md5(data[:4] + authenticator + data[20:length] + secret).digest()  # noqa: S324
    return data[0] if hmac.compare_digest(expected, data[4:20]) else 0


def rate_limit_attribute(value: str) -> bytes:
    """The bytes of a Mikrotik-Rate-Limit vendor attribute (what an Accept must carry)."""
    inner = bytes((MIKROTIK_RATE_LIMIT, len(value) + 2)) + value.encode()
    return _attr(VENDOR_SPECIFIC, struct.pack("!I", MIKROTIK_VENDOR) + inner)


@dataclass
class Request:
    packet: bytes
    ident: int
    authenticator: bytes
    expect: int  # ACCESS_ACCEPT or ACCESS_REJECT
    rate: bytes  # the Mikrotik-Rate-Limit attribute an Accept must carry (b"" when none)


def build_requests(users: list[tuple[str, str, str]], n: int, concurrency: int, secret: bytes, seed: int) -> list:
    """`n` requests for random users (username, password, rate limit); request i goes on socket
    i % concurrency with the id (i // concurrency) % 256; ~1 % with a wrong password."""
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        username, password, rate = users[rng.randrange(len(users))]
        wrong = rng.random() < WRONG_PASSWORD_SHARE
        ident = (i // concurrency) % 256
        authenticator = rng.randbytes(16)
        packet = access_request(ident, username, password + "x" if wrong else password, secret, authenticator)
        requests.append(
            Request(packet, ident, authenticator, ACCESS_REJECT if wrong else ACCESS_ACCEPT,
                    b"" if wrong or not rate else rate_limit_attribute(rate))
        )  # fmt: skip
    return requests


def fire(port: int, requests: list[Request], concurrency: int, secret: bytes, *, timeout: float = 2.0) -> dict:
    """Send every request to 127.0.0.1:`port`, `concurrency` outstanding at a time (one per socket),
    and return the rate, latency percentiles, answer counts and the client's CPU time."""
    sockets = []
    for _ in range(concurrency):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    poller = select.epoll()
    lane_of = {}
    for lane, sock in enumerate(sockets):
        poller.register(sock.fileno(), select.EPOLLIN)
        lane_of[sock.fileno()] = lane
    queues = [list(range(lane, len(requests), concurrency)) for lane in range(concurrency)]
    cursor = [0] * concurrency
    current = [-1] * concurrency
    sent_at = [0.0] * concurrency
    latencies = []
    counts = {"accept": 0, "reject": 0, "unexpected": 0, "bad_answer": 0, "lost": 0, "missing_rate_limit": 0}
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    clock = time.perf_counter

    def send_next(lane: int) -> None:
        if cursor[lane] >= len(queues[lane]):
            current[lane] = -1
            return
        index = queues[lane][cursor[lane]]
        cursor[lane] += 1
        current[lane] = index
        sent_at[lane] = clock()
        sockets[lane].send(requests[index].packet)

    started = clock()
    for lane in range(concurrency):
        send_next(lane)
    busy = sum(1 for c in current if c >= 0)
    while busy:
        for fd, _ in poller.poll(0.05):
            lane = lane_of[fd]
            data = sockets[lane].recv(4096)
            index = current[lane]
            if index < 0:
                continue
            request = requests[index]
            code = answer_code(data, request.ident, request.authenticator, secret)
            if not code:
                if data[1:2] == bytes((request.ident,)):
                    counts["bad_answer"] += 1
                else:
                    continue  # a late answer to an earlier, timed-out request
            else:
                latencies.append(clock() - sent_at[lane])
                counts["accept" if code == ACCESS_ACCEPT else "reject" if code == ACCESS_REJECT else "unexpected"] += 1
                if code != request.expect:
                    counts["unexpected"] += 1
                elif request.rate and request.rate not in data:
                    counts["missing_rate_limit"] += 1
            send_next(lane)
            if current[lane] < 0:
                busy -= 1
        now = clock()
        for lane in range(concurrency):
            if current[lane] >= 0 and now - sent_at[lane] > timeout:
                counts["lost"] += 1
                send_next(lane)
                if current[lane] < 0:
                    busy -= 1
    seconds = clock() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    poller.close()
    for sock in sockets:
        sock.close()
    client_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    latencies.sort()
    answered = len(latencies)

    def pct(share: float) -> float:
        return round(latencies[min(answered - 1, int(share * answered))] * 1000, 2) if answered else 0.0

    return {
        "requests": len(requests),
        "expected_accepts": sum(1 for r in requests if r.expect == ACCESS_ACCEPT),
        "expected_rejects": sum(1 for r in requests if r.expect == ACCESS_REJECT),
        **counts,
        "seconds": round(seconds, 3),
        "requests_per_second": round(answered / seconds, 1) if seconds else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2) if answered else 0.0,
        "client_cpu_seconds": round(client_cpu, 3),
        "client_cpu_share_of_one_core": round(client_cpu / seconds, 3) if seconds else 0.0,
    }


# --- inside the app's environment ----------------------------------------------------------------


def setup() -> dict:
    """Every service active, 127.0.0.1 registered as a NAS, then the full reconciliation (set-based)
    projects every service into radcheck/radreply. Returns counts and the reconciliation's time."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wavu.settings")
    django.setup()
    from django.db.models import F
    from django.db.models.functions import Coalesce

    from wavu.network import services, writer
    from wavu.network.models import RadCheck, RadReply
    from wavu.subscriptions.models import Status, Subscription

    Subscription.objects.exclude(status=Status.ACTIVE).update(
        status=Status.ACTIVE, suspension_cause="", paused_at=None, pause_until=None, cancelled_at=None,
        activated_at=Coalesce(F("activated_at"), F("created_at")),
    )  # fmt: skip
    services.create_nas(address="127.0.0.1", shortname="bench", secret=NAS_SECRET, reason="benchmark")
    started = time.perf_counter()
    record = writer.reconcile()
    seconds = time.perf_counter() - started
    return {
        "services": Subscription.objects.filter(status=Status.ACTIVE).count(),
        "reconcile_seconds": round(seconds, 2),
        "services_checked": record.services_checked,
        "radcheck_rows": RadCheck.objects.count(),
        "radreply_rows": RadReply.objects.count(),
    }


# --- the orchestration -----------------------------------------------------------------------------


def _fresh_postgres(url: str, name: str = "wavu_bench_radius") -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error:
        return None
    return url.rsplit("/", 1)[0] + "/" + name


def _last_json(output: str) -> dict:
    return json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))


def _free_udp_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def explain_authorize(db_url: str, username: str) -> dict:
    """EXPLAIN of FreeRADIUS's stock authorize queries for one user: each must use an index."""
    import psycopg

    queries = {
        "authorize_check_query": "SELECT id, UserName, Attribute, Value, Op FROM radcheck WHERE Username = %s "
        "ORDER BY id",
        "authorize_reply_query": "SELECT id, UserName, Attribute, Value, Op FROM radreply WHERE Username = %s "
        "ORDER BY id",
        "group_membership_query": "SELECT GroupName FROM radusergroup WHERE UserName=%s ORDER BY priority",
        "simul_count_query": "SELECT COUNT(RadAcctId) FROM radacct a LEFT OUTER JOIN nasreload n USING "
        "(nasipaddress) WHERE username = %s AND acctstoptime IS NULL AND (a.acctstarttime > n.reloadtime OR "
        "n.reloadtime IS NULL)",
    }
    plans = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE radcheck; ANALYZE radreply; ANALYZE radusergroup; ANALYZE radacct")
        for name, sql in queries.items():
            lines = [row[0] for row in conn.execute("EXPLAIN " + sql, (username,)).fetchall()]
            # An empty table (radusergroup and radacct here) is scanned whatever its indexes: then ask
            # whether the planner can use an index at all.
            conn.execute("SET enable_seqscan = off")
            forced = [row[0] for row in conn.execute("EXPLAIN " + sql, (username,)).fetchall()]
            conn.execute("RESET enable_seqscan")
            plans[name] = {
                "index": any("Index" in line for line in lines),
                "index_usable": any("Index" in line for line in forced),
                "plan": lines,
                "plan_without_seqscan": forced,
            }
    return plans


def read_users(db_url: str) -> tuple[list[tuple[str, str, str]], dict[str, list], dict[str, list]]:
    """(username, password, rate limit) of every user with a password, and every user's check and
    reply rows as FreeRADIUS reads them from Wavu's tables."""
    import psycopg

    check: dict[str, list] = {}
    reply: dict[str, list] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for username, attribute, op, value in conn.execute(
            "SELECT username, attribute, op, value FROM radcheck ORDER BY username, id"
        ):
            check.setdefault(username, []).append((attribute, op, value))
        for username, attribute, op, value in conn.execute(
            "SELECT username, attribute, op, value FROM radreply ORDER BY username, id"
        ):
            reply.setdefault(username, []).append((attribute, op, value))
    users = []
    for username, rows in check.items():
        password = next((v for a, _, v in rows if a == "Cleartext-Password"), None)
        if password is None:
            continue
        rate = next((v for a, _, v in reply.get(username, []) if a == "Mikrotik-Rate-Limit"), "")
        users.append((username, password, rate))
    return users, check, reply


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def users_file(check: dict[str, list], reply: dict[str, list]) -> str:
    """A `files` module users file: one entry per user with the same check and reply items."""
    out = []
    for username, rows in check.items():
        items = ", ".join(f"{a} {op} {_quoted(v)}" for a, op, v in rows)
        out.append(f"{_quoted(username)}\t{items}")
        replies = reply.get(username, [])
        for i, (attribute, op, value) in enumerate(replies):
            out.append(f"\t{attribute} {op} {_quoted(value)}" + ("," if i < len(replies) - 1 else ""))
        out.append("")
    return "\n".join(out) + "\n"


def files_variant(sql_dir: Path, out: Path, check: dict, reply: dict) -> None:
    """The generated configuration with `files` instead of `sql`: the same radiusd.conf (threads,
    logging, security), modules and virtual server, but authorize reads the users file, clients come
    from a `client` section, and accounting/session/post-auth do no database work."""
    shutil.copytree(sql_dir, out)
    (out / "mods-enabled" / "sql").unlink()
    (out / "mods-enabled" / "files").write_text("files {\n\tfilename = ${confdir}/users\n}\n")
    (out / "users").write_text(users_file(check, reply))
    site = (out / "sites-enabled" / "wavu").read_text()
    site = re.sub(r"(authorize \{.*?)^(\t+)sql$", r"\1\2files", site, count=1, flags=re.S | re.M)
    site = re.sub(r"^\t+sql\n", "", site, flags=re.M)
    (out / "sites-enabled" / "wavu").write_text(site)
    with (out / "radiusd.conf").open("a") as conf:
        conf.write(f"\nclient bench {{\n\tipaddr = 127.0.0.1\n\tsecret = {_quoted(NAS_SECRET)}\n}}\n")


class Server:
    """FreeRADIUS (threaded, no debug) on a configuration directory until `stop()`."""

    def __init__(self, binary: str, directory: Path, port: int, probe: Request):
        self.directory = directory
        self.log = directory / "var" / "log" / "stdout.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([binary, "-f", "-d", str(directory)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.connect(("127.0.0.1", port))
            while True:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"FreeRADIUS did not start on {directory}:\n{self._tail()}")
                try:
                    sock.send(probe.packet)
                    sock.recv(4096)
                    break
                except OSError:
                    time.sleep(0.2)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def _tail(self) -> str:
        texts = []
        for path in (self.log, self.directory / "var" / "log" / "radius.log"):
            if path.exists():
                texts.append("\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(texts)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def _pg_cpu_seconds(database: str) -> float:
    """CPU time of the local PostgreSQL backends connected to `database` (FreeRADIUS's connections;
    other databases on the same server, and PostgreSQL's background processes, are left out)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    marker = f" {database} ".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not title.startswith(b"postgres:") or marker not in title:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _pg_connections(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'freeradius-wavu'"
        ).fetchone()[0]


def measure(binary: str, directory: Path, port: int, requests: list, warmup: list, concurrency: int,
            db_url: str | None) -> dict:  # fmt: skip
    server = Server(binary, directory, port, warmup[0])
    try:
        fire(port, warmup, concurrency, NAS_SECRET.encode())
        database = db_url.rsplit("/", 1)[1] if db_url else ""
        cpu, pg_cpu = server.cpu_seconds(), _pg_cpu_seconds(database) if database else 0.0
        result = fire(port, requests, concurrency, NAS_SECRET.encode())
        result["freeradius_cpu_seconds"] = round(server.cpu_seconds() - cpu, 3)
        if database:
            result["postgres_cpu_seconds"] = round(_pg_cpu_seconds(database) - pg_cpu, 3)
            result["postgres_connections"] = _pg_connections(db_url)
        result["freeradius_threads"] = server.threads()
    finally:
        server.stop()
    return result


def radius_bench(pg_url: str, *, users: int = 100_000, n: int = 60_000, concurrency: int = 32,
                 warmup: int = 5_000, keep: bool = False) -> dict | None:  # fmt: skip
    """Run the whole benchmark; None when PostgreSQL does not answer or FreeRADIUS is not installed."""
    binary = shutil.which("freeradius", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", "")) or shutil.which(
        "radiusd", path="/usr/sbin:/usr/local/sbin"
    )
    if binary is None:
        print("FreeRADIUS is not installed (Debian: apt-get install freeradius freeradius-postgresql): skipped")
        return None
    db_url = _fresh_postgres(pg_url)
    if db_url is None:
        print("PostgreSQL does not answer: the RADIUS benchmark is skipped")
        return None
    work = Path(tempfile.mkdtemp(prefix="wavu-bench-radius-"))
    try:
        env = dict(os.environ)
        env.update(DATABASE_URL=db_url, WAVU_VAR_DIR=str(work / "var"), DEBUG="false", LOG_LEVEL="WARNING",
                   SECRET_KEY="bench-only-secret-key-0123456789abcdefghijkl")  # fmt: skip

        def run(args: list[str]) -> str:
            done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.stderr.write(done.stdout + done.stderr)
                raise SystemExit(f"failed: {' '.join(args)}")
            return done.stdout

        print(f"[radius] migrate and seed {users:,} customers…", flush=True)
        started = time.perf_counter()
        run([str(BIN / "wavu"), "migrate", "-v0"])
        run([str(BIN / "wavu"), "seed-demo", "--customers", str(users), "--months", "0", "--postpaid-only", "-v0"])
        seeded = time.perf_counter() - started
        print(f"[radius] seeded in {seeded:.0f} s; every service active, NAS 127.0.0.1, reconcile…", flush=True)
        info = _last_json(run([sys.executable, str(ROOT / "benchmarks" / "radius_auth.py"), "setup"]))
        print(f"[radius] reconcile: {info['services_checked']:,} services → {info['radcheck_rows']:,} radcheck + "
              f"{info['radreply_rows']:,} radreply rows in {info['reconcile_seconds']:.1f} s", flush=True)  # fmt: skip
        accounts, check, reply = read_users(db_url)
        plans = explain_authorize(db_url, accounts[len(accounts) // 2][0])

        auth_port, acct_port = _free_udp_ports(2)
        sql_dir, files_dir = work / "sql", work / "files"
        run([str(BIN / "wavu"), "radius-config", "--out", str(sql_dir), "--listen", "127.0.0.1", "--auth-port",
             str(auth_port), "--acct-port", str(acct_port), "--reject-delay", "0"])  # fmt: skip
        files_variant(sql_dir, files_dir, check, reply)

        secret = NAS_SECRET.encode()
        requests = build_requests(accounts, n, concurrency, secret, seed=5)
        warm = build_requests(accounts, warmup, concurrency, secret, seed=6)
        warm = [r for r in warm if r.expect == ACCESS_ACCEPT]
        results = {}
        for name, directory in (("sql", sql_dir), ("files", files_dir)):
            print(f"[radius] FreeRADIUS on {name}: {warmup:,} warm-up + {n:,} Access-Requests, "
                  f"{concurrency} outstanding…", flush=True)  # fmt: skip
            results[name] = measure(binary, directory, auth_port, requests, warm, concurrency,
                                    db_url if name == "sql" else None)  # fmt: skip
    finally:
        if keep:
            print(f"[radius] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    sql, files = results["sql"], results["files"]
    checks = {
        "authorize_queries_use_indexes": all(p["index_usable"] for p in plans.values())
        and plans["authorize_check_query"]["index"] and plans["authorize_reply_query"]["index"],
        **{
            f"{name}_answers_right": r["accept"] == r["expected_accepts"] and r["reject"] == r["expected_rejects"]
            and r["unexpected"] == 0 and r["bad_answer"] == 0 and r["lost"] == 0 and r["missing_rate_limit"] == 0
            for name, r in results.items()
        },
    }  # fmt: skip
    return {
        "database": "postgresql",
        "users": len(accounts),
        "seed_seconds": round(seeded, 1),
        "setup": info,
        "requests": n,
        "warmup": warmup,
        "concurrency": concurrency,
        "explain": plans,
        "sql": sql,
        "files": files,
        "ratio_sql_to_files": round(sql["requests_per_second"] / files["requests_per_second"], 3),
        "target": {"requests_per_second": TARGET_RATE, "p99_ms": TARGET_P99_MS},
        "meets_target": sql["requests_per_second"] >= TARGET_RATE and sql["p99_ms"] < TARGET_P99_MS,
        "checks": checks,
        "ok": all(checks.values()),
    }


def report(result: dict | None) -> list[str]:
    if not result:
        return []
    lines = [
        "",
        f"RADIUS authentication, FreeRADIUS 3.2 on PostgreSQL, {result['users']:,} users, {result['requests']:,} "
        f"PAP Access-Requests ({result['concurrency']} outstanding) (target ≥ {TARGET_RATE:,}/s, p99 < "
        f"{TARGET_P99_MS:.0f} ms on Wavu's tables)",
    ]
    for name, label in (("sql", "Wavu's tables (sql)"), ("files", "flat users file   ")):
        r = result[name]
        extra = f", PG {r['postgres_cpu_seconds']:.1f} s" if "postgres_cpu_seconds" in r else ""
        lines.append(
            f"  {label} {r['requests_per_second']:>8,.0f} req/s   p50 {r['p50_ms']:.2f} ms   p99 {r['p99_ms']:.2f} ms"
            f"   max {r['max_ms']:.1f} ms   accept {r['accept']:,}/{r['expected_accepts']:,}   reject "
            f"{r['reject']}/{r['expected_rejects']}   lost {r['lost']}   CPU s: client {r['client_cpu_seconds']:.1f}, "
            f"FreeRADIUS {r['freeradius_cpu_seconds']:.1f}{extra}"
        )
    ok = "ok" if result["meets_target"] else "MISSED"
    lines.append(f"  ratio sql/files {result['ratio_sql_to_files']:.2f}   target {ok}")
    lines.append("  checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items()))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="activate every service, register 127.0.0.1, reconcile; print JSON")
    r = sub.add_parser("run", help="run the RADIUS benchmark alone")
    r.add_argument("--pg-url", default=os.environ.get("PG_BENCH_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    r.add_argument("--users", type=int, default=100_000)
    r.add_argument("--n", type=int, default=60_000)
    r.add_argument("--concurrency", type=int, default=32)
    r.add_argument("--keep", action="store_true", help="keep the configuration directories")
    args = parser.parse_args(argv)
    if args.command == "setup":
        print(json.dumps(setup()))
    else:
        result = radius_bench(args.pg_url, users=args.users, n=args.n, concurrency=args.concurrency, keep=args.keep)
        print("\n".join(report(result)))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
