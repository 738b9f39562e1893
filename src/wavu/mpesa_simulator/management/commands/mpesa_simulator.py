"""`wavu mpesa-simulator`: run the local Daraja simulator until Ctrl-C.

A thin shell over `wavu.mpesa_simulator`: flags become the simulator's `Config`, then the server runs
in this process's main thread. It needs no database. See docs/mpesa-simulator.md.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from wavu.mpesa_simulator import Config, SimulatorServer
from wavu.mpesa_simulator.scenarios import OUTCOMES


class Command(BaseCommand):
    help = "Run a local stand-in for Safaricom's Daraja API (OAuth, STK push/query, C2B, Transaction Status)."
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        defaults = Config()
        parser.add_argument("--port", type=int, default=8900, help="port to listen on (default 8900; 0 = any)")
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--consumer-key", default=defaults.consumer_key)
        parser.add_argument("--consumer-secret", default=defaults.consumer_secret)
        parser.add_argument("--passkey", default=defaults.passkey, help="Lipa Na M-Pesa passkey for every shortcode")
        parser.add_argument(
            "--paybill", default=defaults.paybill, help=f"paybill shortcode (default {defaults.paybill})"
        )
        parser.add_argument("--till-store", default=defaults.till_store, help="Buy Goods store number")
        parser.add_argument("--till", default=defaults.till, help="Buy Goods till number")
        parser.add_argument("--initiator", default=defaults.initiator, help="initiator name for Transaction Status")
        parser.add_argument("--token-ttl", type=int, default=defaults.token_ttl, help="access token lifetime, seconds")
        parser.add_argument(
            "--outcome", default="success", choices=sorted(OUTCOMES), help="default STK outcome (default success)"
        )
        parser.add_argument(
            "--delay", type=float, default=defaults.default_script["delay"], help="seconds until the customer acts"
        )
        parser.add_argument("--callback-delay", type=float, default=0.0, help="extra seconds before a callback")
        parser.add_argument("--copies", type=int, default=1, help="callbacks per outcome (2+ duplicates, 0 lost)")
        parser.add_argument(
            "--msisdn",
            dest="msisdn_form",
            default=defaults.msisdn_form,
            choices=["masked", "hashed", "plain"],
            help="MSISDN form in v2 C2B payloads (default masked)",
        )
        parser.add_argument("--no-validation", action="store_true", help="do not post C2B validation requests")
        parser.add_argument(
            "--validation-timeout", type=float, default=defaults.validation_timeout, help="seconds (default 8)"
        )
        parser.add_argument("--no-callback-pending", type=float, default=defaults.no_callback_pending)
        parser.add_argument("--allow-any-url", action="store_true", help="accept C2B URLs with forbidden keywords")
        parser.add_argument("--no-magic-phones", action="store_true", help="no built-in per-phone outcomes")
        parser.add_argument("--verbose", action="store_true", help="log every request and callback")

    def handle(self, *args, **options):
        config = Config(
            consumer_key=options["consumer_key"],
            consumer_secret=options["consumer_secret"],
            passkey=options["passkey"],
            paybill=options["paybill"],
            till_store=options["till_store"],
            till=options["till"],
            initiator=options["initiator"],
            token_ttl=options["token_ttl"],
            msisdn_form=options["msisdn_form"],
            validation=not options["no_validation"],
            validation_timeout=options["validation_timeout"],
            no_callback_pending=options["no_callback_pending"],
            strict_urls=not options["allow_any_url"],
        )
        script = {
            "outcome": options["outcome"],
            "delay": options["delay"],
            "callback_delay": options["callback_delay"],
            "copies": options["copies"],
        }
        try:
            config.update({"default_script": script})
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if options["token_ttl"] < 1:
            raise CommandError("--token-ttl must be at least 1")
        if options["no_magic_phones"]:
            config.phones = {}
        try:
            server = SimulatorServer(
                (options["host"], options["port"]), config, log=self.log, verbose=options["verbose"]
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from None
        base = server.base_url
        self.log(f"Daraja simulator listening on {base}  (control API: {base}/simulator)")
        self.log(f"  consumer key     {config.consumer_key}")
        self.log(f"  consumer secret  {config.consumer_secret}")
        self.log(f"  passkey          {config.passkey}")
        self.log(f"  paybill          {config.paybill}")
        self.log(f"  till             store {config.till_store}, till {config.till}")
        self.log(f"  initiator        {config.initiator} (any security credential)")
        self.log(f"  default outcome  {options['outcome']} after {options['delay']:g} s")
        if config.phones:
            self.log("  scripted phones (PUT/DELETE /simulator/phones/<msisdn> to change):")
            for number, script in sorted(config.phones.items()):
                self.log(f"    {number}  " + ", ".join(f"{k}={v}" for k, v in script.items()))
        self.log("Wavu: set the channel's environment to 'simulator' and its base URL to " + base)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            server.dispatcher.stop()
            self.log("Daraja simulator stopped")

    def log(self, message: str) -> None:
        self.stdout.write(f"[mpesa-sim] {message}")
        self.stdout.flush()
        sys.stdout.flush()
