"""Races for PostgreSQL tests: callables released at the same moment in threads.

    results, errors = race(20, lambda: record_payment(...))
    results, errors = side_by_side(job_a, job_b)

Each thread waits at one barrier, runs its callable, and closes its own database connection. What
the callables return is collected in `results` (in finishing order), what they raise in `errors`,
so the test asserts both (e.g. one payment created and nineteen "already processed").
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def side_by_side(*jobs: Callable, timeout: float = 60) -> tuple[list, list[BaseException]]:
    """Run each of `jobs` in its own thread, all released together; return (results, errors)."""
    barrier = threading.Barrier(len(jobs))
    results: list = []
    errors: list[BaseException] = []

    def run(job: Callable) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(job())
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which asserts on it
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results, errors


def race(count: int, work: Callable, *, timeout: float = 60) -> tuple[list, list[BaseException]]:
    """Run `work` in `count` threads at once; return (results, errors)."""
    return side_by_side(*([work] * count), timeout=timeout)
