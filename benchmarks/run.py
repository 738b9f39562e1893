"""`make bench`: Wavu's benchmarks, each measured against a baseline taken in the same run.

Billing run (issue 3): for each database (SQLite, and PostgreSQL when it answers) and each N in
--sizes (default 10,000 and 100,000), a fresh database is migrated and filled by
`wavu seed-demo --customers N --months 0 --postpaid-only`; then a new process runs the billing run
once for the day a month ahead (benchmarks/billing_run.py: every service due with one period, plus
the arrears of the suspended services the seed stopped billing) and reports invoices issued per
second, the database's raw insert rate for the same rows, their ratio, and peak memory. Targets
(2-core machine): ≥ 2,000 invoices/s on PostgreSQL, ≥ 4,000/s on SQLite, throughput at the largest
N within 20 % of the smallest, memory flat in N. The figures are printed and written to
var/bench/billing-run-<timestamp>.json.

C2B (issue 4, benchmarks/c2b.py): on PostgreSQL, --c2b-n documented C2B confirmations (+10 % duplicate
deliveries) through the HTTP hook under gunicorn with `wavu worker` processes: acknowledgement p50/p99,
end-to-end confirmations per second, zero double credits; baseline: /healthz under the same server and
client. Target (2-core machine): ≥ 500 confirmations/s. Written to var/bench/c2b-<timestamp>.json.
RADIUS (issue 5, benchmarks/radius_auth.py): on PostgreSQL, 100,000 active services projected into
FreeRADIUS's tables; FreeRADIUS 3.2 on the configuration `wavu radius-config` generates answers PAP
Access-Requests at a fixed concurrency, against the same FreeRADIUS answering the same requests from
a flat users file, in the same run: requests/s, p50/p99, the ratio. Target (2-core machine): ≥ 2,000
authentications/s with p99 < 20 ms. Written to var/bench/radius-auth-<timestamp>.json.
Skipped, with the reason, when FreeRADIUS is not installed.
Usage (issue 5, benchmarks/usage.py): on PostgreSQL, interim updates turned into usage per second with
--usage-n open sessions (default 100,000), against the rate of FreeRADIUS's stock interim UPDATE of the
same rows in the same run. Target (2-core machine): ≥ 5,000/s. Written to var/bench/usage-<timestamp>.json.
`--bench billing,c2b,radius,usage` picks the benchmarks (default all four).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGETS = {"sqlite": 4000, "postgresql": 2000}


def _env(database_url: str | None, var_dir: str) -> dict:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(WAVU_VAR_DIR=var_dir, DEBUG="false", SECRET_KEY="bench-only-secret-key-0123456789abcdefghijkl")
    return env


def _run(args: list[str], env: dict) -> str:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"failed: {' '.join(args)}")
    return done.stdout


def _fresh_postgres(url: str) -> str | None:
    """A new empty database `wavu_bench` on the server of `url`, or None when no server answers."""
    try:
        import psycopg
    except ImportError:
        return None
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("DROP DATABASE IF EXISTS wavu_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE wavu_bench")
    except psycopg.Error:
        return None
    return url.rsplit("/", 1)[0] + "/wavu_bench"


def billing_run(sizes: list[int], databases: list[str], pg_url: str) -> list[dict]:
    results = []
    for database in databases:
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="wavu-bench-") as var_dir:
                url = None
                if database == "postgresql":
                    url = _fresh_postgres(pg_url)
                    if url is None:
                        print("PostgreSQL does not answer: PostgreSQL runs skipped")
                        break
                env = _env(url, var_dir)
                print(f"[{database}] N={n:,}: migrate and seed…", flush=True)
                started = time.perf_counter()
                _run([str(BIN / "wavu"), "migrate", "-v0"], env)
                _run([str(BIN / "wavu"), "seed-demo", "--customers", str(n), "--months", "0", "--postpaid-only",
                      "-v0"], env)  # fmt: skip
                seeded = time.perf_counter() - started
                print(f"[{database}] N={n:,}: seeded in {seeded:.0f} s; billing run…", flush=True)
                out = _run([sys.executable, str(ROOT / "benchmarks" / "billing_run.py"), "measure"], env)
                result = json.loads(out.strip().splitlines()[-1])
                result.update(n=n, seed_seconds=round(seeded, 1))
                results.append(result)
                print(
                    f"[{database}] N={n:,}: {result['billed']:,} invoices ({result['caught_up']:,} for arrears) in "
                    f"{result['seconds']:.2f} s = {result['invoices_per_second']:,.0f}/s; raw insert of the same rows "
                    f"{result['raw_rows_per_second']:,.0f} rows/s; ratio {result['ratio_to_raw_insert']}; "
                    f"peak RSS {result['rss_peak_mb']} MB",
                    flush=True,
                )
    return results


def report(results: list[dict]) -> list[str]:
    lines = ["", "Billing run — invoices issued per second (target: SQLite ≥ 4,000, PostgreSQL ≥ 2,000)", ""]
    lines.append(f"{'database':<11}{'N':>9}{'invoices':>9}{'s':>8}{'/s':>8}{'raw rows/s':>12}{'ratio':>7}"
                 f"{'RSS MB':>8}{'target':>8}")  # fmt: skip
    for r in results:
        ok = "ok" if r["invoices_per_second"] >= TARGETS[r["database"]] else "MISSED"
        lines.append(f"{r['database']:<11}{r['n']:>9,}{r['billed']:>9,}{r['seconds']:>8.2f}"
                     f"{r['invoices_per_second']:>8,.0f}{r['raw_rows_per_second']:>12,.0f}"
                     f"{r['ratio_to_raw_insert']:>7.3f}{r['rss_peak_mb']:>8.0f}{ok:>8}")  # fmt: skip
    by_db: dict[str, list[dict]] = {}
    for r in results:
        by_db.setdefault(r["database"], []).append(r)
    for database, rows in by_db.items():
        if len(rows) < 2:
            continue
        small, large = min(rows, key=lambda r: r["n"]), max(rows, key=lambda r: r["n"])
        drop = 1 - large["invoices_per_second"] / small["invoices_per_second"]
        growth = large["rss_peak_mb"] - small["rss_peak_mb"]
        change = f"{drop:.1%} lower" if drop >= 0 else f"{-drop:.1%} higher"
        lines.append(
            f"{database}: throughput at {large['n']:,} is {change} than at {small['n']:,} "
            f"({'ok' if drop <= 0.20 else 'MISSED'}: within 20 %); peak RSS {small['rss_peak_mb']} → "
            f"{large['rss_peak_mb']} MB ({growth:+.0f} MB)"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Wavu benchmarks")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated N (default 10000,100000)")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--bench", default="billing,c2b,radius,usage", help="comma-separated: billing, c2b, "
                        "radius, usage (default all)")  # fmt: skip
    parser.add_argument("--c2b-n", type=int, default=20000, help="unique C2B confirmations (default 20000)")
    parser.add_argument("--usage-n", type=int, default=100000, help="open sessions, usage bench (default 100000)")
    parser.add_argument("--radius-n", type=int, default=60000, help="measured Access-Requests (default 60000)")
    parser.add_argument("--radius-users", type=int, default=100000, help="RADIUS users (default 100000)")
    parser.add_argument("--radius-concurrency", type=int, default=32, help="outstanding Access-Requests (default 32)")
    parser.add_argument(
        "--pg-url", default=os.environ.get("PG_BENCH_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    benches = {b.strip() for b in args.bench.split(",") if b.strip()}
    unknown = benches - {"billing", "c2b", "radius", "usage"}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from billing, c2b, radius, usage")
    started = dt.datetime.now()
    out_dir = ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    if "billing" in benches:
        results = billing_run(sizes, databases, args.pg_url)
        lines = report(results)
        print("\n".join(lines))
        path = out_dir / f"billing-run-{started:%Y%m%d-%H%M%S}.json"
        path.write_text(json.dumps({"started": started.isoformat(), "machine": machine, "results": results}, indent=2))
        print(f"\nwritten to {path.relative_to(ROOT)}")
    if "c2b" in benches:
        import c2b  # benchmarks/ is on sys.path when this file runs as a script

        result = c2b.c2b_bench(args.pg_url, n=args.c2b_n)
        print("\n".join(c2b.report(result)))
        if result is not None:
            path = out_dir / f"c2b-{started:%Y%m%d-%H%M%S}.json"
            path.write_text(
                json.dumps({"started": started.isoformat(), "machine": machine, "result": result}, indent=2)
            )
            print(f"\nwritten to {path.relative_to(ROOT)}")
    if "radius" in benches:
        import radius_auth  # benchmarks/ is on sys.path when this file runs as a script

        result = radius_auth.radius_bench(
            args.pg_url, users=args.radius_users, n=args.radius_n, concurrency=args.radius_concurrency
        )
        print("\n".join(radius_auth.report(result)))
        if result is not None:
            path = out_dir / f"radius-auth-{started:%Y%m%d-%H%M%S}.json"
            path.write_text(
                json.dumps({"started": started.isoformat(), "machine": machine, "result": result}, indent=2)
            )
            print(f"\nwritten to {path.relative_to(ROOT)}")
    if "usage" in benches:
        import usage  # benchmarks/ is on sys.path when this file runs as a script

        result = usage.usage_bench(args.pg_url, sessions=args.usage_n)
        print("\n".join(usage.report(result)))
        if result is not None:
            path = out_dir / f"usage-{started:%Y%m%d-%H%M%S}.json"
            path.write_text(
                json.dumps({"started": started.isoformat(), "machine": machine, "result": result}, indent=2)
            )
            print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
