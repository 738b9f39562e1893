"""`wavu radius-config --out DIR`: write a FreeRADIUS 3.2 configuration for Wavu's database (see
`wavu.network.radius_config` and docs/network.md), then check it with `freeradius -C` when FreeRADIUS
is installed here."""

import subprocess

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from wavu.network import radius_config
from wavu.network.selectors import radius_policy


class Command(BaseCommand):
    help = "Write a FreeRADIUS 3.2 configuration directory (and RouterOS scripts) that uses Wavu's database."

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="the directory to write (created if missing)")
        parser.add_argument("--database-url", help="the database as FreeRADIUS reaches it (default: DATABASE_URL)")
        parser.add_argument("--freeradius-dir", default="", help="FreeRADIUS's own configuration, for its stock "
                            "queries.conf (default: the first of /etc/freeradius/3.0, /etc/raddb, …)")  # fmt: skip
        parser.add_argument("--libdir", default="", help="FreeRADIUS's modules (default: /usr/lib/freeradius)")
        parser.add_argument("--listen", default="*", help="address FreeRADIUS listens on (default: all)")
        parser.add_argument("--auth-port", type=int, default=1812)
        parser.add_argument("--acct-port", type=int, default=1813)
        parser.add_argument("--radius-ip", default=radius_config.PLACEHOLDER_RADIUS_IP,
                            help="this RADIUS server's address as the routers reach it (RouterOS scripts)")  # fmt: skip
        parser.add_argument("--portal-ip", default="", help="the payment portal's address for the walled garden "
                            "(default: WAVU_PUBLIC_URL's host when it is an IP address)")  # fmt: skip
        parser.add_argument("--user", default="", help="user FreeRADIUS runs as (e.g. freerad)")
        parser.add_argument("--group", default="", help="group FreeRADIUS runs as (e.g. freerad)")
        parser.add_argument("--reject-delay", type=int, default=1, help="seconds before an Access-Reject (0–5)")
        parser.add_argument("--no-require-message-authenticator", action="store_true",
                            help="accept Access-Requests without Message-Authenticator (old routers only)")  # fmt: skip
        parser.add_argument("--no-check", action="store_true", help="do not run `freeradius -C` on the result")

    def handle(self, *args, **options):
        for name in ("auth_port", "acct_port"):
            if not 1 <= options[name] <= 65535:
                raise CommandError(f"--{name.replace('_', '-')} must be a port number, 1–65535")
        if not 0 <= options["reject_delay"] <= 5:
            raise CommandError("--reject-delay must be 0–5 seconds")
        url = options.get("database_url")
        database = radius_config.database_from_url(url) if url else settings.DATABASES["default"]
        try:
            policy = radius_policy()
        except ValueError as exc:
            raise ImproperlyConfigured(f"RADIUS settings: {exc}") from exc
        try:
            config = radius_config.config_for(
                options["out"],
                database=database,
                policy=policy,
                stock_dir=options["freeradius_dir"],
                lib_dir=options["libdir"],
                listen_address=options["listen"],
                auth_port=options["auth_port"],
                acct_port=options["acct_port"],
                require_message_authenticator=not options["no_require_message_authenticator"],
                reject_delay=options["reject_delay"],
                user=options["user"],
                group=options["group"],
                radius_ip=options["radius_ip"],
                portal_ip=options["portal_ip"] or radius_config.portal_ip_from(settings.WAVU_PUBLIC_URL),
            )
            written = radius_config.write(config)
        except radius_config.ConfigError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Wrote {len(written)} files to {config.out_dir} ({config.dialect}, stock queries from "
                          f"{config.queries_conf}).")  # fmt: skip
        for placeholder, option in (
            (radius_config.PLACEHOLDER_RADIUS_IP, "--radius-ip"),
            (radius_config.PLACEHOLDER_PORTAL_IP, "--portal-ip"),
        ):
            if placeholder in (config.radius_ip, config.portal_ip):
                self.stdout.write(f"  RouterOS scripts say {placeholder}: give {option} to fill it in.")
        if options["no_check"]:
            return
        binary = radius_config.freeradius_binary()
        if binary is None:
            self.stdout.write("FreeRADIUS is not installed here: not checked (run `freeradius -C -d DIR` on its host).")
            return
        check = subprocess.run(
            [binary, "-C", "-l", "stdout", "-d", str(config.out_dir)], capture_output=True, text=True, timeout=60
        )
        if check.returncode != 0:
            tail = "\n".join((check.stdout + check.stderr).strip().splitlines()[-15:])
            raise CommandError(f"`{binary} -C -d {config.out_dir}` refused the configuration:\n{tail}")
        self.stdout.write(f"Checked: `{binary} -C` accepts it. Start it with: {binary} -X -d {config.out_dir}")
