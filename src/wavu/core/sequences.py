"""Gap-free counters.

`next_value(name)` must run inside the transaction that uses the number: the row lock
(`SELECT … FOR UPDATE` on PostgreSQL; SQLite's IMMEDIATE write transaction serialises writers)
is held until commit, so concurrent issuers queue, and a rollback gives the number back.
"""

from django.db import IntegrityError, transaction

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
