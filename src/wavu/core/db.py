"""Database-level guards that make issued financial records immutable.

Each app declares `ROW_PROTECTIONS` (a list of `RowProtection`) in its models module. After every
`migrate`, `install_row_protections` (re)creates them as triggers on SQLite or PostgreSQL; before
every `migrate` they are dropped, because SQLite rebuilds a table to alter it and a trigger that
names another table would break the rebuild (and the table's own triggers would vanish with it).
The declared list is therefore always what the database enforces.

A trigger refuses an UPDATE, DELETE or INSERT when its condition holds (e.g. "the invoice is no
longer a draft and one of its amounts changed"), so a queryset `.update()`, raw SQL or a bug in a
service cannot rewrite an issued invoice, a payment or a journal entry. Refusals surface as
`django.db.IntegrityError` with a message starting "immutable:".
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps as global_apps
from django.db import connections


@dataclass(frozen=True)
class RowProtection:
    name: str
    table: str
    event: str  # UPDATE, DELETE or INSERT
    when: str = "TRUE"  # SQL over OLD./NEW. columns
    changed: tuple[str, ...] = ()  # the refusal applies only when one of these columns changes
    message: str = ""

    def condition(self, vendor: str) -> str:
        when = self.when if vendor != "sqlite" else self.when.replace("TRUE", "1")
        if not self.changed:
            return f"({when})"
        op = "IS NOT" if vendor == "sqlite" else "IS DISTINCT FROM"
        diffs = " OR ".join(f"OLD.{c} {op} NEW.{c}" for c in self.changed)
        return f"({when}) AND ({diffs})"

    def create_sql(self, vendor: str) -> list[str]:
        msg = (self.message or f"immutable: {self.table} row cannot be changed").replace("'", "''")
        cond = self.condition(vendor)
        if vendor == "sqlite":
            return [
                f"CREATE TRIGGER IF NOT EXISTS {self.name} BEFORE {self.event} ON {self.table} FOR EACH ROW "
                f"WHEN {cond} BEGIN SELECT RAISE(ABORT, '{msg}'); END;"
            ]
        ret = "OLD" if self.event == "DELETE" else "NEW"
        return [
            f"CREATE OR REPLACE FUNCTION {self.name}_fn() RETURNS trigger AS $$ BEGIN "
            f"IF {cond} THEN RAISE EXCEPTION '{msg}' USING ERRCODE = 'integrity_constraint_violation'; "
            f"END IF; RETURN {ret}; END $$ LANGUAGE plpgsql;",
            f"DROP TRIGGER IF EXISTS {self.name} ON {self.table};",
            f"CREATE TRIGGER {self.name} BEFORE {self.event} ON {self.table} "
            f"FOR EACH ROW EXECUTE FUNCTION {self.name}_fn();",
        ]

    def drop_sql(self, vendor: str) -> list[str]:
        if vendor == "sqlite":
            return [f"DROP TRIGGER IF EXISTS {self.name};"]
        return [f"DROP TRIGGER IF EXISTS {self.name} ON {self.table};", f"DROP FUNCTION IF EXISTS {self.name}_fn();"]


def copy_field_values(target, source) -> None:
    """Give a caller's instance the values of the row a service locked and saved, so callers keep using
    their own object. Also carries over related objects already loaded on `source`."""
    if target is source or not isinstance(target, type(source)):
        return
    for field in source._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    for name, value in source._state.fields_cache.items():
        target._state.fields_cache[name] = value


def declared_row_protections() -> list[RowProtection]:
    found: list[RowProtection] = []
    for config in global_apps.get_app_configs():
        found.extend(getattr(config.models_module, "ROW_PROTECTIONS", ()))
    return found


def _apply(using: str, install: bool) -> None:
    connection = connections[using]
    if connection.vendor not in ("sqlite", "postgresql"):  # pragma: no cover
        raise RuntimeError(f"row protections support SQLite and PostgreSQL, not {connection.vendor}")
    tables = set(connection.introspection.table_names())
    with connection.cursor() as cursor:
        for protection in declared_row_protections():
            if protection.table not in tables:
                continue
            statements = protection.create_sql(connection.vendor) if install else protection.drop_sql(connection.vendor)
            for sql in statements:
                cursor.execute(sql)


def install_row_protections(using: str = "default", **kwargs) -> None:
    """post_migrate: create every declared trigger (idempotent)."""
    _apply(using, install=True)


def drop_row_protections(using: str = "default", **kwargs) -> None:
    """pre_migrate: drop every declared trigger so table rebuilds can run."""
    _apply(using, install=False)


_CHUNK_SIZES = (64, 32, 16, 8, 4, 2, 1)


def _chunks(rows: list, max_params: int, width: int):
    """Split `rows` into chunks of 64, 32, 16 … 1 rows (never more than `max_params` values), so a
    writer uses at most seven statement shapes per table: SQLite keeps each prepared statement it
    saw in a cache, and one shape per batch size would grow that cache with every batch."""
    sizes = [n for n in _CHUNK_SIZES if n * width <= max_params] or [1]
    offset = 0
    while offset < len(rows):
        left = len(rows) - offset
        size = next((n for n in sizes if n <= left), 1)
        yield rows[offset : offset + size]
        offset += size


_PASS_THROUGH = (int, str, bool)
_UNNEST_FROM = 8  # PostgreSQL: fewer rows go as VALUES (adapting arrays costs more than it saves)


def _preparer(field, connection):
    """`field.get_db_prep_save` for one column, remembering its answers: a billing run writes the
    same few dates, periods and amounts thousands of times. Plain ints and strings pass as they are."""
    cache: dict = {}
    prep = field.get_db_prep_save

    def prepare(value):
        if value is None or type(value) in _PASS_THROUGH:
            return value
        try:
            return cache[value]
        except KeyError:
            cache[value] = result = prep(value, connection)
            return result
        except TypeError:  # unhashable (JSON): prepared every time
            return prep(value, connection)

    return prepare


def insert_rows(model, fields: list[str], rows: list[tuple], *, returning: bool = False, using: str = "default"):
    """Insert `rows` (tuples of values for `fields`, given by attribute name such as "customer_id")
    into `model`'s table with multi-row INSERT statements, in the caller's transaction.

    For set-based writers (billing runs) where per-object ORM overhead dominates: values are
    prepared exactly as the ORM would (`Field.get_db_prep_save`), no `save()` runs, and database
    constraints and triggers apply as for any insert. With `returning`, returns the new primary
    keys in the order of `rows` (INSERT … RETURNING, PostgreSQL and SQLite ≥ 3.35).
    """
    if not rows:
        return []
    from django.db import connections

    connection = connections[using]
    opts = model._meta
    model_fields = [opts.get_field(name) for name in fields]
    for name, field in zip(fields, model_fields, strict=True):
        if field.attname != name:
            raise ValueError(f"give {field.attname!r}, not {name!r}")
    columns = ", ".join(connection.ops.quote_name(f.column) for f in model_fields)
    prepare = [_preparer(f, connection) for f in model_fields]
    table = connection.ops.quote_name(opts.db_table)
    pk_column = connection.ops.quote_name(opts.pk.column)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    if connection.vendor == "postgresql" and len(rows) > _UNNEST_FROM:
        return _insert_unnest(connection, opts, model_fields, rows, returning)
    ids: list[int] = []
    with connection.cursor() as cursor:
        for chunk in _chunks(rows, 999, len(fields)):
            params = [prep(value) for row in chunk for prep, value in zip(prepare, row, strict=True)]
            sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))}"
            if returning:
                cursor.execute(f"{sql} RETURNING {pk_column}", params)
                ids.extend(row[0] for row in cursor.fetchall())
            else:
                cursor.execute(sql, params)
    return ids


def insert_new_rows(model, fields: list[str], rows: list[tuple], *, key: list[str], using: str = "default") -> dict:
    """Like `insert_rows`, but a row that a unique constraint refuses is skipped rather than failing
    the transaction (ON CONFLICT DO NOTHING). Returns {values of `key` fields: new pk} for the rows
    that were inserted; a row missing from the answer was already there, or was inserted meanwhile by
    a transaction that committed first (PostgreSQL waits for it, then skips the row)."""
    if not rows:
        return {}
    from django.db import connections

    connection = connections[using]
    opts = model._meta
    model_fields = [opts.get_field(name) for name in fields]
    key_columns = ", ".join(connection.ops.quote_name(opts.get_field(name).column) for name in key)
    table = connection.ops.quote_name(opts.db_table)
    returning = f"RETURNING {connection.ops.quote_name(opts.pk.column)}, {key_columns}"
    found: dict = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            casts = ", ".join(f"%s::{t}" for t in _array_types(connection, model_fields))
            sql = (
                f"INSERT INTO {table} ({', '.join(_columns(connection, model_fields))}) SELECT * FROM unnest({casts}) "
                f"ON CONFLICT DO NOTHING {returning}"
            )
            cursor.execute(sql, _unnest_arrays(connection, model_fields, rows))
            found.update({tuple(row[1:]): row[0] for row in cursor.fetchall()})
            return found
        prepare = [_preparer(f, connection) for f in model_fields]
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        for chunk in _chunks(rows, 999, len(fields)):
            params = [prep(value) for row in chunk for prep, value in zip(prepare, row, strict=True)]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(_columns(connection, model_fields))}) "
                f"VALUES {', '.join([placeholder] * len(chunk))} ON CONFLICT DO NOTHING {returning}",
                params,
            )
            found.update({tuple(row[1:]): row[0] for row in cursor.fetchall()})
    return found


def _array_types(connection, model_fields) -> list[str]:
    return [f"{f.rel_db_type(connection) if f.is_relation else f.db_type(connection)}[]" for f in model_fields]


def _columns(connection, model_fields) -> list[str]:
    return [connection.ops.quote_name(f.column) for f in model_fields]


def _unnest_arrays(connection, model_fields, rows) -> list[list]:
    """One list per column for PostgreSQL's unnest(); JSON values are adapted as the ORM would
    (psycopg adapts the other types itself)."""
    arrays = [list(column) for column in zip(*rows, strict=True)]
    for i, field in enumerate(model_fields):
        if field.get_internal_type() == "JSONField":
            prepare = _preparer(field, connection)
            arrays[i] = [prepare(value) for value in arrays[i]]
    return arrays


def _insert_unnest(connection, opts, model_fields, rows, returning: bool) -> list[int]:
    """PostgreSQL: one INSERT … SELECT FROM unnest(one array per column): a short statement whatever
    the number of rows (psycopg parses a long VALUES list slowly). Rows come back in order."""
    arrays = _unnest_arrays(connection, model_fields, rows)
    casts = ", ".join(f"%s::{t}" for t in _array_types(connection, model_fields))
    table = connection.ops.quote_name(opts.db_table)
    sql = f"INSERT INTO {table} ({', '.join(_columns(connection, model_fields))}) SELECT * FROM unnest({casts})"
    with connection.cursor() as cursor:
        if not returning:
            cursor.execute(sql, arrays)
            return []
        cursor.execute(f"{sql} RETURNING {connection.ops.quote_name(opts.pk.column)}", arrays)
        return [row[0] for row in cursor.fetchall()]


def update_rows(model, fields: list[str], rows: list[tuple], *, using: str = "default") -> None:
    """Set `fields` on many rows of `model` in one executemany: each row is (values…, pk). In the
    caller's transaction; values prepared as the ORM would; no `save()`, constraints and triggers apply."""
    if not rows:
        return
    from django.db import connections

    connection = connections[using]
    opts = model._meta
    if connection.vendor == "postgresql":
        model_fields = [opts.get_field(name) for name in fields] + [opts.pk]
        names = [f"v{i}" for i in range(len(model_fields))]
        casts = ", ".join(f"%s::{t}" for t in _array_types(connection, model_fields))
        assignments = ", ".join(f"{col} = v.{name}" for col, name in zip(_columns(connection, model_fields[:-1]),
                                                                         names, strict=False))  # fmt: skip
        pk = connection.ops.quote_name(opts.pk.column)
        sql = (
            f"UPDATE {connection.ops.quote_name(opts.db_table)} AS t SET {assignments} "
            f"FROM unnest({casts}) AS v({', '.join(names)}) WHERE t.{pk} = v.{names[-1]}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
        return
    prepare = [_preparer(opts.get_field(name), connection) for name in fields]
    assignments = ", ".join(f"{connection.ops.quote_name(opts.get_field(n).column)} = %s" for n in fields)
    sql = f"UPDATE {connection.ops.quote_name(opts.db_table)} SET {assignments} WHERE {opts.pk.column} = %s"
    with connection.cursor() as cursor:
        cursor.executemany(
            sql, [[prep(value) for prep, value in zip(prepare, row[:-1], strict=True)] + [row[-1]] for row in rows]
        )
