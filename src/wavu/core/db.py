"""Database-level guards that make issued financial records immutable.

`ProtectRows` is a migration operation that installs a trigger on SQLite or PostgreSQL refusing an
UPDATE, DELETE or INSERT when a condition holds (e.g. "the invoice is no longer a draft and one
of its amounts changed"). It is enforcement in the database, so a queryset `.update()`, raw SQL
or a bug in a service cannot rewrite an issued invoice, a payment or a journal entry.
Triggers raise an integrity error (`django.db.IntegrityError`) with a message starting "immutable:".
"""

from __future__ import annotations

from django.db.migrations.operations.base import Operation


class ProtectRows(Operation):
    reversible = True
    reduces_to_sql = True

    def __init__(self, name: str, table: str, event: str, when: str = "TRUE", changed: tuple = (), message=""):
        """`when` uses OLD./NEW. like SQL triggers; `changed` lists columns that may not change."""
        assert event in {"UPDATE", "DELETE", "INSERT"}
        self.name, self.table, self.event = name, table, event
        self.when, self.changed = when, tuple(changed)
        self.message = message or f"immutable: {table} row cannot be {event.lower()}d"

    def deconstruct(self):
        kwargs = {
            "name": self.name,
            "table": self.table,
            "event": self.event,
            "when": self.when,
            "changed": self.changed,
            "message": self.message,
        }
        return self.__class__.__qualname__, [], kwargs

    def state_forwards(self, app_label, state):
        pass

    def describe(self):
        return f"Protect {self.table} rows on {self.event} ({self.name})"

    def _condition(self, vendor: str) -> str:
        if not self.changed:
            return f"({self.when})"
        op = "IS NOT" if vendor == "sqlite" else "IS DISTINCT FROM"
        diffs = " OR ".join(f"OLD.{c} {op} NEW.{c}" for c in self.changed)
        return f"({self.when}) AND ({diffs})"

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        vendor = schema_editor.connection.vendor
        cond = self._condition(vendor)
        msg = self.message.replace("'", "''")
        if vendor == "sqlite":
            cond_sqlite = cond.replace("TRUE", "1")
            schema_editor.execute(
                f"CREATE TRIGGER {self.name} BEFORE {self.event} ON {self.table} FOR EACH ROW "
                f"WHEN {cond_sqlite} BEGIN SELECT RAISE(ABORT, '{msg}'); END;"
            )
        elif vendor == "postgresql":
            ret = "OLD" if self.event == "DELETE" else "NEW"
            schema_editor.execute(
                f"CREATE OR REPLACE FUNCTION {self.name}_fn() RETURNS trigger AS $$ BEGIN "
                f"IF {cond} THEN RAISE EXCEPTION '{msg}' USING ERRCODE = 'integrity_constraint_violation'; "
                f"END IF; RETURN {ret}; END $$ LANGUAGE plpgsql;"
            )
            schema_editor.execute(
                f"CREATE TRIGGER {self.name} BEFORE {self.event} ON {self.table} "
                f"FOR EACH ROW EXECUTE FUNCTION {self.name}_fn();"
            )
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise NotImplementedError(f"ProtectRows does not support {vendor}")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        vendor = schema_editor.connection.vendor
        schema_editor.execute(
            f"DROP TRIGGER IF EXISTS {self.name}" + ("" if vendor == "sqlite" else f" ON {self.table}")
        )
        if vendor == "postgresql":
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {self.name}_fn()")
