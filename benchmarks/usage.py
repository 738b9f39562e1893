"""Benchmark (b) of issue 5: accounting interim updates turned into usage per second, 100,000 open sessions.

`usage_bench(pg_url, sessions=…)` (called by benchmarks/run.py, `--bench usage`) builds a fresh
PostgreSQL database `wavu_bench_usage`, migrates it, then in a new process (`python
benchmarks/usage.py measure`):

1. creates one plan (data quota with an action, so every service's quota is checked) and N active
   services, and N open `radacct` sessions, one per service, set-based (INSERT … SELECT);
2. runs the ingester once, so every session is known (its first sighting, timed and reported);
3. **baseline**: sends N interim updates the way FreeRADIUS's stock PostgreSQL `interim-update`
   query writes them (the same UPDATE … WHERE AcctUniqueId = … AND AcctStopTime IS NULL, one
   statement per update, pipelined by psycopg), timed: the rate the database itself takes them;
4. **measured**: one ingestion run over those N updated sessions (`network.usage.ingest`: per-session
   deltas, hourly buckets, period totals, quota checks), timed: interim updates ingested per second;
5. checks the result: every service's period usage equals what was sent.

Target (2-core machine): ≥ 5,000 interim updates ingested per second. Reported with the baseline
and their ratio; written to var/bench/usage-<timestamp>.json by run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET = 5000  # interim updates ingested per second, 2-core machine

INTERIM_SQL = (
    "UPDATE radacct SET FramedIPAddress = NULLIF(%s, '')::inet, AcctSessionTime = %s, "
    "AcctInterval = (EXTRACT(EPOCH FROM now()) - EXTRACT(EPOCH FROM (COALESCE(AcctUpdateTime, AcctStartTime)))), "
    "AcctUpdateTime = now(), AcctInputOctets = ((%s::bigint << 32) + %s::bigint), "
    "AcctOutputOctets = ((%s::bigint << 32) + %s::bigint) WHERE AcctUniqueId = %s AND AcctStopTime IS NULL"
)


def measure(sessions: int) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wavu.settings")
    django.setup()
    import datetime as dt

    from django.db import connection

    from wavu.catalog.models import Plan
    from wavu.core import clock
    from wavu.customers.models import Customer
    from wavu.network import usage
    from wavu.network.models import PeriodUsage
    from wavu.subscriptions.models import Subscription

    now = clock.now()
    started = now - dt.timedelta(days=1)
    plan = Plan.objects.create(code="bench-10", name="Bench 10 Mbps", kind=Plan.Kind.PREPAID, download_kbps=10_000,
                               upload_kbps=5_000, data_quota_mb=1_000_000, quota_action=Plan.QuotaAction.BLOCK,
                               technology=Plan.Technology.FTTH, created_at=now, updated_at=now)  # fmt: skip
    t0 = time.perf_counter()
    for offset in range(0, sessions, 10_000):
        ids = range(offset, min(offset + 10_000, sessions))
        customers = Customer.objects.bulk_create(
            [
                Customer(
                    account_number=f"B{i:09d}", name=f"Bench {i}", phone=f"2547{i:08d}", created_at=now, updated_at=now
                )
                for i in ids
            ]  # fmt: skip
        )
        Subscription.objects.bulk_create(
            [
                Subscription(
                    customer=c,
                    plan=plan,
                    status="active",
                    username=f"u{i}",
                    password="pw",
                    activated_at=started,
                    current_period_start=started,
                    current_period_end=now + dt.timedelta(days=29),
                    created_at=now,
                    updated_at=now,
                )
                for i, c in zip(ids, customers, strict=True)
            ]  # fmt: skip
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, acctupdatetime,"
            " acctsessiontime, acctinputoctets, acctoutputoctets, framedipaddress) "
            "SELECT 's' || g, 'uniq-' || g, 'u' || g, '10.20.0.1', now() - interval '10 minutes',"
            " now() - interval '5 minutes', 300, 1000, 2000, '10.64.0.1' FROM generate_series(0, %s - 1) AS g",
            [sessions],
        )
        cursor.execute("ANALYZE")
    setup_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    first = usage.ingest()
    first_seconds = time.perf_counter() - t0

    upload, download = 5 * 2**32 + 12_345, 7 * 2**32 + 67_890  # past 4 GiB: Gigawords
    params = [("10.64.0.1", 600, upload >> 32, upload & 0xFFFFFFFF, download >> 32, download & 0xFFFFFFFF, f"uniq-{i}")
              for i in range(sessions)]  # fmt: skip
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.executemany(INTERIM_SQL, params)
    baseline_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = usage.ingest()
    ingest_seconds = time.perf_counter() - t0

    expected = upload + download
    wrong = PeriodUsage.objects.exclude(bytes_in=upload, bytes_out=download).count()
    counted = PeriodUsage.objects.count()
    return {
        "sessions": sessions,
        "setup_seconds": round(setup_seconds, 1),
        "first_sighting_seconds": round(first_seconds, 2),
        "first_sighting_per_second": round(first.sessions / first_seconds),
        "baseline_updates": sessions,
        "baseline_seconds": round(baseline_seconds, 2),
        "baseline_updates_per_second": round(sessions / baseline_seconds),
        "ingested_updates": report.sessions,
        "ingest_seconds": round(ingest_seconds, 2),
        "ingested_per_second": round(report.sessions / ingest_seconds),
        "ratio_to_baseline": round((report.sessions / ingest_seconds) / (sessions / baseline_seconds), 3),
        "services_with_usage": counted,
        "services_wrong": wrong,
        "bytes_per_service": expected,
    }


def _fresh(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("DROP DATABASE IF EXISTS wavu_bench_usage WITH (FORCE)")
            conn.execute("CREATE DATABASE wavu_bench_usage")
    except psycopg.Error:
        return None
    return url.rsplit("/", 1)[0] + "/wavu_bench_usage"


def usage_bench(pg_url: str, *, sessions: int = 100_000) -> dict | None:
    url = _fresh(pg_url)
    if url is None:
        print("PostgreSQL does not answer: usage benchmark skipped")
        return None
    with tempfile.TemporaryDirectory(prefix="wavu-bench-usage-") as var_dir:
        env = dict(os.environ, DATABASE_URL=url, WAVU_VAR_DIR=var_dir, DEBUG="false",
                   SECRET_KEY="bench-only-secret-key-0123456789abcdefghijkl")  # fmt: skip
        print(f"[usage] migrate, then {sessions:,} services and open sessions…", flush=True)
        done = subprocess.run([str(BIN / "wavu"), "migrate", "-v0"], env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit("migrate failed")
        done = subprocess.run([sys.executable, str(Path(__file__)), "measure", "--sessions", str(sessions)], env=env,
                              cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit("usage benchmark failed")
        return json.loads(done.stdout.strip().splitlines()[-1])


def report(result: dict | None) -> list[str]:
    if result is None:
        return ["", "Usage ingestion: skipped (no PostgreSQL)"]
    ok = "ok" if result["ingested_per_second"] >= TARGET and not result["services_wrong"] else "MISSED"
    return [
        "",
        f"Usage ingestion — interim updates turned into usage per second, {result['sessions']:,} open sessions "
        f"(target ≥ {TARGET:,}/s)",
        f"  baseline: the stock interim UPDATE, {result['baseline_updates']:,} in {result['baseline_seconds']} s = "
        f"{result['baseline_updates_per_second']:,}/s",
        f"  ingested: {result['ingested_updates']:,} in {result['ingest_seconds']} s = "
        f"{result['ingested_per_second']:,}/s (ratio to baseline {result['ratio_to_baseline']}) {ok}",
        f"  first sighting of {result['sessions']:,} new sessions: {result['first_sighting_seconds']} s; "
        f"services with the exact usage: {result['services_with_usage'] - result['services_wrong']:,}/"
        f"{result['services_with_usage']:,}",
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["measure"])
    parser.add_argument("--sessions", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.sessions)))
