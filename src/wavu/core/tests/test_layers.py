"""Which way dependencies point (docs/architecture.md, "Which way dependencies point").

Every module under src/wavu is parsed with `ast`; every import it makes, at module level or inside a
function, is an edge of the module graph. The rules:

- core imports no other app, only `wavu.schedule`, the registry its worker reads (its tests may: they
  exercise core's machinery on other apps' tables);
- no two modules import each other, directly or around a loop, except the cycles in `KNOWN_CYCLES`;
- the demo is imported by nobody but itself, and the M-Pesa simulator only by itself, the demo (which
  runs it) and tests (which drive it as a stand-in for Daraja);
- a module imports only from its own layer or the layers below it (`LAYERS`; tests sit above them all).

A failure names each offending import as file:line. Migrations are history and are left out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[3]  # …/src
PACKAGE = SRC / "wavu"

# The layers, bottom first. A module belongs to the HIGHEST layer with a pattern matching its dotted
# name (fnmatch: "wavu.ledger.*" matches the app's modules, "wavu.*.api" every app's API), so an app's
# api.py is an interface even though "wavu.payments.*" matches it too. Keep in step with
# docs/architecture.md ("Which way dependencies point").
LAYERS: list[tuple[str, list[str]]] = [
    # No business state. `wavu.schedule` is the registry of periodic jobs and drains that core's worker
    # reads: it names the jobs by dotted path and imports nothing but core.
    ("core", ["wavu", "wavu.settings", "wavu.schedule", "wavu.core", "wavu.core.*"]),
    ("catalog", ["wavu.catalog", "wavu.catalog.*"]),
    # A subscription belongs to a customer; closing a customer asks whether services are still live.
    (
        "customers and subscriptions",
        ["wavu.customers", "wavu.customers.*", "wavu.subscriptions", "wavu.subscriptions.*"],
    ),
    # RADIUS follows the subscriptions and knows nothing of money.
    ("network", ["wavu.network", "wavu.network.*"]),
    ("ledger", ["wavu.ledger", "wavu.ledger.*"]),
    # What payments need of billing: the invoice, which invoices are open, how settling moves one.
    ("invoices", ["wavu.billing", "wavu.billing.models", "wavu.billing.selectors", "wavu.billing.settlement"]),
    ("payments", ["wavu.payments", "wavu.payments.*"]),
    # Issuing an invoice lets the customer's credit pay it; a credit note releases allocations.
    ("issuing", ["wavu.billing.services", "wavu.billing.pdf"]),
    # Billing's automation issues invoices, applies credit, and reconnects and renews after a payment.
    (
        "billing automation",
        [
            "wavu.billing.runs",
            "wavu.billing.prepaid",
            "wavu.billing.plan_changes",
            "wavu.billing.dunning",
            "wavu.billing.tasks",
        ],
    ),
    # Channels that take money in and send it out, and vouchers that buy hotspot services.
    ("mpesa and hotspot", ["wavu.mpesa", "wavu.mpesa.*", "wavu.hotspot", "wavu.hotspot.*"]),
    # What people, routers and Safaricom talk to, and the wiring: the API, the admin, the hooks, the
    # commands, the URL maps, the app configs (which connect receivers). They may use any app.
    (
        "interfaces",
        [
            "wavu.*.api",
            "wavu.*.admin",
            "wavu.*.apps",
            "wavu.*.urls",
            "wavu.*.hooks",
            "wavu.*.management",
            "wavu.*.management.*",
            "wavu.urls",
            "wavu.cli",
            "wavu.asgi",
            "wavu.wsgi",
        ],
    ),
    # On top of everything; rule (c) also keeps everyone else off them.
    ("demo and simulators", ["wavu.demo", "wavu.demo.*", "wavu.mpesa_simulator", "wavu.mpesa_simulator.*"]),
]

# Cycles known and tolerated, each to be removed by the change named next to it. A cycle that is not
# here fails the test; an entry that no longer is a cycle fails it too, so the list only shrinks.
KNOWN_CYCLES: list[tuple[frozenset[str], str]] = [
    (
        # tax.py reads `TaxRate` rows (imported inside rates_for and RateBook), and models.py takes the
        # choices of `TaxRate` from tax.py. Found by this test; not in issue 10's list.
        frozenset({"wavu.core.tax", "wavu.core.models"}),
        "pre-existing inside core: give TaxClass/TaxKind or the rate reads a home that does not loop",
    ),
    (
        # The worker reads the registry (`load_schedule`, `drains`), the registry imports `Periodic` from
        # the scheduler, and the scheduler's ticker imports `beat` from tasks. Found by this test; not in
        # issue 10's list.
        frozenset({"wavu.core.scheduler", "wavu.core.tasks", "wavu.schedule"}),
        "pre-existing inside core: e.g. Periodic in a module the scheduler does not import from",
    ),
]

TEST_PATTERNS = ["wavu.testing", "wavu.testing.*", "wavu.*.tests", "wavu.*.tests.*", "wavu.*.conftest"]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line} {self.importer} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.relative_to(PACKAGE).parts
    }


def resolve(dotted: str) -> str | None:
    """The Wavu module an imported dotted name lives in (`wavu.core.tax.TaxClass` → `wavu.core.tax`)."""
    known = modules()
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imported_names(source: str, module: str, *, is_package: bool = False) -> list[tuple[str, int]]:
    """Every dotted name `module` imports, with its line: module level and inside functions, absolute and
    relative (`from . import tasks` in wavu.network.writer → wavu.network.tasks)."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


@cache
def imports() -> list[Import]:
    """The edges of the module graph (one per importing line and imported module)."""
    found: dict[tuple[str, str, int], Import] = {}
    for name, path in modules().items():
        for dotted, line in imported_names(path.read_text(), name, is_package=path.name == "__init__.py"):
            if dotted == "wavu" or dotted.startswith("wavu."):
                imported = resolve(dotted)
                if imported and imported != name:
                    found.setdefault((name, imported, line), Import(name, imported, path, line))
    return list(found.values())


def is_test(module: str) -> bool:
    return any(fnmatchcase(module, pattern) for pattern in TEST_PATTERNS)


def layer_of(module: str) -> tuple[int, str]:
    """(rank, name) of the module's layer; tests rank above every layer."""
    if is_test(module):
        return len(LAYERS), "tests"
    for rank in reversed(range(len(LAYERS))):
        name, patterns = LAYERS[rank]
        if any(fnmatchcase(module, pattern) for pattern in patterns):
            return rank, name
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def app_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def cycles() -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in imports():
        graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in modules():
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def report(problems: list[Import], rule: str) -> str:
    return f"{rule}:\n  " + "\n  ".join(str(p) for p in problems)


# --- the rules -----------------------------------------------------------------------------------


def test_the_graph_sees_every_kind_of_import():
    """The checks below are only as good as the graph."""
    source = """
import wavu.core.clock
from wavu.billing import settlement
from wavu.core.tax import TaxClass
from . import usage, writer
from .models import Nas

def later():
    from ..payments.services import apply_customer_credit
"""
    names = [name for name, _line in imported_names(source, "wavu.network.tasks")]
    assert names == [
        "wavu.core.clock",
        "wavu.billing.settlement",
        "wavu.core.tax.TaxClass",
        "wavu.network.usage",
        "wavu.network.writer",
        "wavu.network.models.Nas",
        "wavu.payments.services.apply_customer_credit",
    ]
    assert [resolve(name) for name in names[1:3]] == ["wavu.billing.settlement", "wavu.core.tax"]
    assert imported_names("from . import apps", "wavu.demo", is_package=True) == [("wavu.demo.apps", 1)]


def test_core_imports_no_other_part_of_wavu():
    outside = [
        i
        for i in imports()
        if app_of(i.importer) == "core" and not is_test(i.importer) and app_of(i.imported) != "core"
        and i.imported != "wavu.schedule"
    ]  # fmt: skip
    assert not outside, report(outside, "core must not import other apps (they sit above it)")


def test_no_module_cycles_but_the_known_ones():
    unknown = [c for c in cycles() if not any(c <= known for known, _why in KNOWN_CYCLES)]
    problems = [i for i in imports() if any(i.importer in c and i.imported in c for c in unknown)]
    assert not unknown, report(problems, "modules importing each other (directly or around a loop)")


def test_every_known_cycle_still_is_one():
    """When a known cycle is gone, its entry must go too (the list only shrinks)."""
    found = cycles()
    stale = [why for known, why in KNOWN_CYCLES if not any(c <= known for c in found)]
    assert not stale, f"no longer cycles, remove them from KNOWN_CYCLES: {stale}"


def test_nobody_imports_the_demo_or_the_simulator():
    def allowed(i: Import) -> bool:
        if app_of(i.imported) == "demo":
            return app_of(i.importer) == "demo"
        if app_of(i.imported) == "mpesa_simulator":
            return app_of(i.importer) in ("mpesa_simulator", "demo") or is_test(i.importer)
        return True

    problems = [i for i in imports() if not allowed(i)]
    assert not problems, report(problems, "the demo and the simulators sit on top: nothing else imports them")


def test_every_module_imports_only_its_own_layer_or_below():
    problems = [i for i in imports() if layer_of(i.imported)[0] > layer_of(i.importer)[0]]
    described = [
        f"{p}  ({layer_of(p.importer)[1]!r} must not import from {layer_of(p.imported)[1]!r}, which sits above it)"
        for p in problems
    ]
    assert not problems, "imports pointing up:\n  " + "\n  ".join(described)


def test_every_module_has_a_layer():
    """A new module must be placed (a new billing module in particular: billing spans four layers);
    `layer_of` names a module that is in no layer. A layer that holds no module has a mistyped pattern."""
    placed = {layer_of(m)[1] for m in modules()}
    empty = [name for name, _patterns in LAYERS if name not in placed]
    assert not empty, f"layers matching no module (a mistyped pattern?): {empty}"
