"""Exit 0 when the PostgreSQL server of the given URL answers, else 1. Used by `make test`."""

import sys

import psycopg

url = sys.argv[1] if len(sys.argv) > 1 else ""
if not url.startswith(("postgres://", "postgresql://")):
    sys.exit(1)
try:
    psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
except Exception:
    sys.exit(1)
sys.exit(0)
