"""Gap-free counters.

`next_value(name)` must run inside the transaction that uses the number: the row lock
(`SELECT … FOR UPDATE` on PostgreSQL; SQLite's IMMEDIATE write transaction serialises writers)
is held until commit, so concurrent issuers queue, and a rollback gives the number back.
"""

from django.db import IntegrityError, transaction
from django.db.models import F

from .models import Sequence


def next_value(name: str, start: int = 1) -> int:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("next_value() must be called inside transaction.atomic()")
    row = Sequence.objects.select_for_update().filter(name=name).first()
    if row is None:
        try:
            with transaction.atomic():
                Sequence.objects.create(name=name, next_value=start)
        except IntegrityError:
            pass  # a concurrent transaction created it first; lock theirs below
        row = Sequence.objects.select_for_update().get(name=name)
    value = row.next_value
    Sequence.objects.filter(pk=row.pk).update(next_value=value + 1)
    return value


def next_values(name: str, count: int, start: int = 1) -> range:
    """Reserve `count` consecutive values in one step (bulk imports, demo seeding).

    Same rules as `next_value`: call it inside the transaction that uses the numbers; the row
    stays locked until commit and a rollback gives the whole block back.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    first = next_value(name, start)
    if count > 1:
        Sequence.objects.filter(name=name).update(next_value=F("next_value") + (count - 1))
    return range(first, first + count)
