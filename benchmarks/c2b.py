"""Benchmark: C2B confirmations per second through the HTTP hook, end to end, on PostgreSQL.

`c2b_bench(pg_url, …)` (called by benchmarks/run.py) builds a fresh database `wavu_bench_c2b`, migrates
it, seeds it with `wavu seed-demo --customers 10000 --months 0 --postpaid-only`, and creates a paybill
channel with the allowlist off (`python benchmarks/c2b.py setup`). It then starts the app under
gunicorn (sync workers, the way it is deployed) and `wavu worker` processes (whose drainer threads
process the stored callbacks in batches), and fires N documented
C2B confirmations with unique TransIDs plus 10 % duplicate deliveries (shuffled, so a copy can race
its original) from a thread pool of httpx clients. It measures:

- acknowledgement latency p50/p99 and the HTTP rate of the hook (requests answered per second);
- end to end: from the first request until the last stored callback is processed (payment stored,
  matched, allocated, posted in the ledger; duplicates settled), in unique confirmations per second;
- zero double credits: payments == unique TransIDs, payment journal entries == unique TransIDs,
  callbacks marked duplicate == duplicate deliveries, and every customer's ledger credit (account
  2200) grew by exactly what was sent to them;
- the baseline, in the same run, same server and same client: the same number of requests to the
  trivial `/healthz` endpoint (one `SELECT 1`), i.e. the ceiling the HTTP stack + Django + a database
  round trip allow on this machine; the hook's ack rate as a share of it shows what storing costs.

Before firing, `wavu billing-run` issues the seeded postpaid services' invoices, so payments are
allocated to open invoices (what is left stays as credit). Job workers run without the scheduler.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET = 500  # confirmations per second, 2-core machine
DUPLICATE_SHARE = 0.10
UNMATCHED_SHARE = 0.05  # account references that match nobody: suspense


# --- inside the app's environment ----------------------------------------------------------------


def setup(accounts: int) -> dict:
    """Create the benchmark channel and return its hook token, shortcode and `accounts` account numbers."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wavu.settings")
    django.setup()
    from wavu.core import clock
    from wavu.customers.models import Customer
    from wavu.mpesa.models import PaymentChannel

    now = clock.now()
    channel = PaymentChannel.objects.create(
        name="Bench paybill", kind="paybill", shortcode="600638", allowlist_mode="off", created_at=now, updated_at=now
    )
    numbers = list(Customer.objects.order_by("pk").values_list("account_number", flat=True)[:accounts])
    return {"token": channel.hook_token, "shortcode": channel.shortcode, "accounts": numbers}


# --- the orchestration -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_postgres(url: str, name: str = "wavu_bench_c2b") -> str | None:
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


def _wait_http(url: str, seconds: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not answer within {seconds} s")


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _fire(url_of, bodies: list, concurrency: int) -> dict:
    """POST every body (None: GET; url_of(i) gives the URL) from `concurrency` threads; latencies in ms."""
    import http.client
    from urllib.parse import urlsplit

    latencies = [0.0] * len(bodies)
    statuses = [0] * len(bodies)

    def send(i: int) -> None:
        # http.client rather than httpx: the client shares the machine's cores with the server, and
        # gunicorn's sync workers close every connection anyway, so a pooled client buys nothing.
        url = urlsplit(url_of(i))
        body = bodies[i]
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            if body is None:
                conn.request("GET", url.path)
            else:
                conn.request("POST", url.path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses[i] = response.status
            conn.close()
        except OSError:
            statuses[i] = -1
        latencies[i] = (time.perf_counter() - started) * 1000

    wall_start = time.time()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, range(len(bodies))))
    seconds = time.perf_counter() - started
    ok = sum(1 for s in statuses if s == 200)
    return {
        "requests": len(bodies),
        "ok": ok,
        "errors": len(bodies) - ok,
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(bodies) / seconds, 1),
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "wall_start": wall_start,
    }


def _payloads(n: int, accounts: list[str], shortcode: str, seed: int = 4) -> tuple[list[dict], dict[str, int]]:
    rng = random.Random(seed)
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=3)))  # TransTime is Kenyan time
    trans_time = (now - dt.timedelta(minutes=1)).strftime("%Y%m%d%H%M%S")
    expected: dict[str, int] = {}
    payloads = []
    for i in range(n):
        amount = rng.randrange(50, 3001)
        if rng.random() < UNMATCHED_SHARE:
            account = f"NOBODY{i}"
        else:
            account = rng.choice(accounts)
            expected[account] = expected.get(account, 0) + amount
        payloads.append({
            "TransactionType": "Pay Bill", "TransID": f"BN{i:08d}", "TransTime": trans_time,
            "TransAmount": f"{amount}.00", "BusinessShortCode": shortcode, "BillRefNumber": account,
            "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "",
            "MSISDN": "2547 ***** 126", "FirstName": "BENCH", "MiddleName": "", "LastName": "",
        })  # fmt: skip
    return payloads, expected


def _settled(db_url: str, total: int, seconds: float) -> dict:
    """Wait until every stored confirmation left "received"/"failed"; returns the counts and times."""
    import psycopg

    deadline = time.monotonic() + seconds
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            stored, pending = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE status IN ('received', 'failed')) "
                "FROM mpesa_inboundcallback WHERE kind = 'c2b_confirmation'"
            ).fetchone()
            if stored >= total and pending == 0:
                break
            if time.monotonic() > deadline:
                return {"timed_out": True, "stored": stored, "pending": pending}
            time.sleep(0.25)
        by_status = dict(
            conn.execute(
                "SELECT status, count(*) FROM mpesa_inboundcallback WHERE kind = 'c2b_confirmation' GROUP BY status"
            ).fetchall()
        )
        last = conn.execute(
            "SELECT extract(epoch FROM max(processed_at)) FROM mpesa_inboundcallback WHERE kind = 'c2b_confirmation'"
        ).fetchone()[0]
    return {"timed_out": False, "stored": stored, "by_status": by_status, "last_processed": float(last)}


def _credits(db_url: str) -> dict[str, int]:
    """What payment entries credited each customer on account 2200 (credits are negative postings), in
    whole shillings; allocations to invoices move it on afterwards and are not counted here."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.account_number, -sum(p.amount) FROM ledger_posting p "
            "JOIN ledger_account a ON a.id = p.account_id JOIN ledger_journalentry e ON e.id = p.entry_id "
            "JOIN customers_customer c ON c.id = p.customer_id "
            "WHERE a.code = '2200' AND e.kind = 'payment' GROUP BY c.account_number"
        ).fetchall()
    return {number: int(total) for number, total in rows}


def _counts(db_url: str) -> dict:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        payments, unmatched = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'unmatched') FROM payments_payment WHERE method = 'mpesa'"
        ).fetchone()
        entries = conn.execute("SELECT count(*) FROM ledger_journalentry WHERE kind = 'payment'").fetchone()[0]
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT reference FROM payments_payment GROUP BY method, source, reference "
            "HAVING count(*) > 1) d"
        ).fetchone()[0]
    return {"payments": payments, "unmatched": unmatched, "payment_entries": entries, "doubled_receipts": doubled}


def c2b_bench(pg_url: str, *, n: int = 5000, customers: int = 10000, web_workers: int = 4, job_workers: int = 1,
              concurrency: int = 32) -> dict | None:  # fmt: skip
    """Run the whole benchmark; None when PostgreSQL does not answer."""
    db_url = _fresh_postgres(pg_url)
    if db_url is None:
        print("PostgreSQL does not answer: the C2B benchmark is skipped")
        return None
    with tempfile.TemporaryDirectory(prefix="wavu-bench-c2b-") as var_dir:
        env = dict(os.environ)
        env.update(DATABASE_URL=db_url, WAVU_VAR_DIR=var_dir, DEBUG="false", LOG_LEVEL="WARNING",
                   SECRET_KEY="bench-only-secret-key-0123456789abcdefghijkl")  # fmt: skip

        def run(args: list[str]) -> str:
            done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.stderr.write(done.stdout + done.stderr)
                raise SystemExit(f"failed: {' '.join(args)}")
            return done.stdout

        print(f"[c2b] migrate and seed {customers:,} customers…", flush=True)
        run([str(BIN / "wavu"), "migrate", "-v0"])
        run([str(BIN / "wavu"), "seed-demo", "--customers", str(customers), "--months", "0", "--postpaid-only", "-v0"])
        run([str(BIN / "wavu"), "billing-run", "--no-progress"])  # open invoices: payments get allocated
        info = json.loads(run([sys.executable, str(ROOT / "benchmarks" / "c2b.py"), "setup"]).strip().splitlines()[-1])
        credits_before = _credits(db_url)

        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        logs = Path(var_dir)
        procs = [
            subprocess.Popen(
                [
                    str(BIN / "gunicorn"),
                    "wavu.wsgi:application",
                    "--workers",
                    str(web_workers),
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--backlog",
                    "2048",
                    "--log-level",
                    "warning",
                ],
                env=env,
                cwd=ROOT,
                stdout=(logs / "web.log").open("w"),  # noqa: SIM115 - closed with the temporary directory
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        ]
        try:
            _wait_http(base + "/healthz")
            print(f"[c2b] gunicorn ({web_workers} sync workers) up; baseline: {n:,} requests to /healthz…", flush=True)
            baseline = _fire(lambda i: base + "/healthz", [None] * n, concurrency)

            payloads, expected = _payloads(n, info["accounts"], info["shortcode"])
            rng = random.Random(7)
            deliveries = payloads + [rng.choice(payloads) for _ in range(int(n * DUPLICATE_SHARE))]
            rng.shuffle(deliveries)
            bodies = [json.dumps(p).encode() for p in deliveries]
            for w in range(job_workers):
                # no scheduler: periodic jobs (billing runs, dunning) would compete with what is measured
                args = [str(BIN / "wavu"), "worker", "--interval", "0.1", "--no-scheduler"]
                procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=(logs / f"worker{w}.log").open("w"),  # noqa: SIM115
                                              stderr=subprocess.STDOUT))  # fmt: skip
            hook = f"{base}/hooks/c2b/{info['token']}/confirmation"
            print(f"[c2b] {job_workers} job workers up; firing {len(bodies):,} confirmations "
                  f"({len(bodies) - n:,} duplicates), {concurrency} concurrent…", flush=True)  # fmt: skip
            fired = _fire(lambda i: hook, bodies, concurrency)
            settled = _settled(db_url, len(bodies), seconds=max(120.0, n / 20))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        counts = _counts(db_url)
        credits_after = _credits(db_url)

    grew = {k: credits_after.get(k, 0) - credits_before.get(k, 0) for k in set(credits_after) | set(credits_before)}
    wrong_credit = sorted(k for k in set(grew) | set(expected) if grew.get(k, 0) != expected.get(k, 0))
    e2e_seconds = settled.get("last_processed", time.time()) - fired["wall_start"]
    checks = {
        "all_acknowledged": fired["errors"] == 0,
        "all_processed": not settled["timed_out"],
        "payments_equal_unique_receipts": counts["payments"] == n,
        "payment_entries_equal_unique_receipts": counts["payment_entries"] == n,
        "no_receipt_twice": counts["doubled_receipts"] == 0,
        "duplicates_flagged": settled.get("by_status", {}).get("duplicate", 0) == len(bodies) - n,
        "every_customer_credit_equals_what_they_paid": not wrong_credit,
    }
    baseline.pop("wall_start")
    fired.pop("wall_start")
    return {
        "database": "postgresql",
        "n_unique": n,
        "deliveries": len(bodies),
        "duplicates": len(bodies) - n,
        "customers": customers,
        "web_workers": web_workers,
        "job_workers": job_workers,
        "concurrency": concurrency,
        "hook": fired,
        "baseline_healthz": baseline,
        "ack_ratio_to_baseline": round(fired["requests_per_second"] / baseline["requests_per_second"], 3),
        "end_to_end_seconds": round(e2e_seconds, 3),
        "end_to_end_per_second": round(n / e2e_seconds, 1) if e2e_seconds > 0 else None,
        "callbacks_by_status": settled.get("by_status"),
        "counts": counts,
        "customers_with_wrong_credit": len(wrong_credit),
        "checks": checks,
        "ok": all(checks.values()),
    }


def report(result: dict | None) -> list[str]:
    if not result:
        return []
    h, b = result["hook"], result["baseline_healthz"]
    e2e = result["end_to_end_per_second"] or 0
    lines = [
        "",
        f"C2B confirmations through the hook, PostgreSQL, {result['n_unique']:,} unique + {result['duplicates']:,} "
        f"duplicate deliveries, gunicorn {result['web_workers']} workers, {result['job_workers']} job workers, "
        f"{result['concurrency']} concurrent clients (target ≥ {TARGET}/s end to end, zero double credits)",
        f"  acknowledged      {h['requests_per_second']:>9,.0f} req/s   p50 {h['p50_ms']:.1f} ms   "
        f"p99 {h['p99_ms']:.1f} ms   errors {h['errors']}",
        f"  baseline /healthz {b['requests_per_second']:>9,.0f} req/s   p50 {b['p50_ms']:.1f} ms   "
        f"p99 {b['p99_ms']:.1f} ms   (hook ack rate = {result['ack_ratio_to_baseline']:.0%} of it)",
        f"  end to end        {e2e:>9,.0f} confirmations/s ({result['end_to_end_seconds']:.1f} s from first request "
        f"to last callback processed)  {'ok' if e2e >= TARGET else 'MISSED'}",
        f"  callbacks         {result['callbacks_by_status']}",
        f"  payments {result['counts']['payments']:,} (suspense {result['counts']['unmatched']:,}), payment journal "
        f"entries {result['counts']['payment_entries']:,}, "
        f"receipts credited twice {result['counts']['doubled_receipts']}, "
        f"customers with a wrong credit {result['customers_with_wrong_credit']}",
        "  checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items()),
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="create the benchmark channel in the current database and print JSON")
    s.add_argument("--accounts", type=int, default=10000)
    r = sub.add_parser("run", help="run the C2B benchmark alone")
    r.add_argument("--pg-url", default=os.environ.get("PG_BENCH_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    r.add_argument("--n", type=int, default=5000)
    r.add_argument("--customers", type=int, default=10000)
    r.add_argument("--web-workers", type=int, default=4)
    r.add_argument("--job-workers", type=int, default=1)
    r.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    if args.command == "setup":
        print(json.dumps(setup(args.accounts)))
    else:
        result = c2b_bench(args.pg_url, n=args.n, customers=args.customers, web_workers=args.web_workers,
                           job_workers=args.job_workers, concurrency=args.concurrency)  # fmt: skip
        print("\n".join(report(result)))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
