"""`wavu demo`: everything a newcomer needs to see Wavu running, in one command.

Steps: create the data folder (SQLite), migrate, seed a demo ISP when the database is empty, make
sure the demo superuser and its API token exist, make sure a demo M-Pesa paybill channel points at
the local Daraja simulator, print the URLs and logins, then supervise the child processes — the web
server, the background worker with its scheduler (`wavu worker`) and the Daraja simulator
(`wavu mpesa-simulator`) — until Ctrl-C. Once the simulator answers, the channel's C2B URLs are
registered with it, so a payment made at the simulator reaches Wavu's hooks like a real one.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from wavu.demo.processes import ChildProcess, Supervisor, wavu_command
from wavu.demo.seed import DEFAULT_MONTHS, database_is_empty

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "wavu-demo"
DEMO_EMAIL = "admin@wavu.example"
SIMULATOR_PORT = 8900


class Command(BaseCommand):
    help = (
        "Run the Wavu demo: migrate, seed a demo ISP if the database is empty, ensure the demo superuser "
        f"({DEMO_USERNAME} / {DEMO_PASSWORD}) and its API token, print URLs, then run the web server and the "
        "background worker. "
        "Ctrl-C stops everything."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="web server port (default 8000)")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument(
            "--customers", type=int, default=200, help="customers to seed when the database is empty (default 200)"
        )
        parser.add_argument("--seed", type=int, default=2024, help="random seed for the demo data (default 2024)")
        parser.add_argument(
            "--months",
            type=int,
            default=DEFAULT_MONTHS,
            help=f"months of billing history to seed (default {DEFAULT_MONTHS})",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="prepare the database, user and token, print the logins, and exit without starting processes",
        )

    def handle(self, *args, **options):
        self.prepare_database()
        self.seed_if_empty(customers=options["customers"], seed=options["seed"], months=options["months"])
        token = self.ensure_demo_user()
        channel = self.ensure_demo_channel()
        base = f"http://{browser_host(options['host'])}:{options['port']}"
        if "WAVU_PUBLIC_URL" not in os.environ:
            # callback URLs registered with the simulator must reach this demo's port (children inherit it)
            os.environ["WAVU_PUBLIC_URL"] = settings.WAVU_PUBLIC_URL = f"http://127.0.0.1:{options['port']}"
        self.print_banner(base, token)
        if options["no_serve"]:
            return
        threading.Thread(target=self.register_when_simulator_answers, args=(channel.pk,), daemon=True).start()
        code = Supervisor(self.child_processes(options), log=self.log).run()
        if code:
            raise CommandError(f"a demo process failed (exit code {code})")

    # --- steps -----------------------------------------------------------------------------------

    def prepare_database(self) -> None:
        if connection.vendor == "sqlite":
            name = settings.DATABASES["default"]["NAME"]
            if name and str(name) != ":memory:" and not str(name).startswith("file:"):
                Path(name).parent.mkdir(parents=True, exist_ok=True)
        self.log(f"database: {describe_database()}")
        call_command("migrate", interactive=False, verbosity=0)

    def seed_if_empty(self, *, customers: int, seed: int, months: int = DEFAULT_MONTHS) -> None:
        if not database_is_empty():
            self.log("the database already has data: not seeding (use a fresh database for new demo data)")
            return
        self.log(f"empty database: seeding a demo ISP with {customers} customers and {months} months of history…")
        call_command("seed_demo", customers=customers, seed=seed, months=months, stdout=self.stdout)

    def ensure_demo_user(self) -> str:
        """Create the demo superuser once (an existing user keeps its password) and return its API token."""
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=DEMO_USERNAME).first()
            if user is None:
                user = User.objects.create_superuser(DEMO_USERNAME, DEMO_EMAIL, DEMO_PASSWORD)
                self.log(f"created superuser {DEMO_USERNAME}")
            token, _ = Token.objects.get_or_create(user=user)
        return token.key

    def ensure_demo_channel(self):
        """The demo's paybill (WAVU_PAYBILL_NUMBER) as a channel in the "simulator" environment, with the
        simulator's credentials; created once, found again on later runs."""
        from wavu.mpesa import channels
        from wavu.mpesa.models import PaymentChannel
        from wavu.mpesa_simulator.state import Config

        shortcode = settings.WAVU["PAYBILL_NUMBER"]
        channel = PaymentChannel.objects.filter(shortcode=shortcode).first()
        if channel is None:
            defaults = Config()
            channel = channels.create_channel(
                name="Demo paybill (simulator)",
                kind=PaymentChannel.Kind.PAYBILL,
                shortcode=shortcode,
                environment=PaymentChannel.Environment.SIMULATOR,
                consumer_key=defaults.consumer_key,
                consumer_secret=defaults.consumer_secret,
                passkey=defaults.passkey,
                initiator_name=defaults.initiator,
                allowlist_mode=PaymentChannel.Allowlist.OFF,  # the simulator calls from 127.0.0.1
            )
            self.log(f"created the demo M-Pesa channel: paybill {shortcode} on the local simulator")
        return channel

    def register_when_simulator_answers(self, channel_id: int, wait: float = 30.0) -> None:
        """Register the demo channel's C2B URLs with the simulator once it listens (a thread of the demo)."""
        from django.db import connections

        from wavu.mpesa import channels
        from wavu.mpesa.models import PaymentChannel

        deadline = time.monotonic() + wait
        url = f"{settings.WAVU['MPESA_SIMULATOR_URL']}/simulator"
        try:
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - the local simulator
                        break
                except OSError:
                    time.sleep(0.5)
            else:
                self.log("the M-Pesa simulator did not answer: C2B URLs not registered")
                return
            try:
                channels.register_c2b_urls(PaymentChannel.objects.get(pk=channel_id))
                self.log("registered the demo paybill's C2B URLs with the simulator")
            except Exception as exc:  # noqa: BLE001 - the demo goes on; the admin action can register later
                self.log(f"could not register the demo paybill's C2B URLs: {exc}")
        finally:
            connections.close_all()

    def child_processes(self, options) -> list[ChildProcess]:
        """The processes `wavu demo` supervises. Later issues append the simulators here."""
        host = options["host"]
        address = f"[{host}]:{options['port']}" if ":" in host else f"{host}:{options['port']}"
        return [
            # --noreload: the supervisor owns the process (the autoreloader would fork a grandchild);
            # --insecure: serve the admin's static files even with DEBUG off.
            ChildProcess("web", wavu_command("runserver", address, "--noreload", "--insecure")),
            # background jobs and the scheduler of periodic jobs (billing runs, renewals, dunning…)
            ChildProcess("worker", wavu_command("worker")),
            # the local stand-in for Safaricom's Daraja API (docs/mpesa-simulator.md)
            ChildProcess(
                "mpesa-simulator",
                wavu_command(
                    "mpesa-simulator",
                    "--port",
                    str(SIMULATOR_PORT),
                    "--paybill",
                    settings.WAVU["PAYBILL_NUMBER"],
                ),
            ),
        ]

    # --- output ----------------------------------------------------------------------------------

    def print_banner(self, base: str, token: str) -> None:
        lines = [
            "",
            "Wavu demo is ready.",
            f"  Admin          {base}/admin/          user {DEMO_USERNAME}, password {DEMO_PASSWORD}",
            f"  API            {base}/api/v1/",
            f"  API docs       {base}/api/docs/",
            f"  Health         {base}/healthz",
            f"  API token      {token}",
            f'  Try            curl -H "Authorization: Token {token}" {base}/api/v1/',
            f"  Jobs           {base}/admin/django_tasks_database/dbtaskresult/   (run by the worker)",
            f"  M-Pesa         simulator http://127.0.0.1:{SIMULATOR_PORT}/simulator — pay account 10008 by paybill:",
            f"                 curl -s localhost:{SIMULATOR_PORT}/simulator/c2b/pay -d "
            f'\'{{"amount": 1500, "account": "10008", "shortcode": "{settings.WAVU["PAYBILL_NUMBER"]}"}}\'',
            f"                 then see {base}/admin/payments/payment/ and {base}/admin/mpesa/inboundcallback/",
            "  (an existing admin user keeps the password it had; Ctrl-C stops the demo)",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def log(self, message: str) -> None:
        self.stdout.write(f"[demo] {message}")
        self.stdout.flush()


def describe_database() -> str:
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return f"SQLite {db['NAME']}"
    return f"{connection.vendor} {db.get('NAME')} on {db.get('HOST') or 'localhost'}"


def browser_host(host: str) -> str:
    """The address to print for a listening address: a wildcard is reached via localhost; IPv6 needs brackets."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
