"""`wavu radius-config`: a complete FreeRADIUS 3.2 configuration directory for Wavu's database, and a
MikroTik RouterOS script per router.

The directory (`freeradius -X -d DIR` runs it) holds:

- `radiusd.conf`: paths inside DIR (logs and pid under `DIR/var`), thread pool, security
  (`reject_delay`, `status_server`), `TZ = UTC` for the server's clock texts;
- `mods-enabled/`: `sql` (rlm_sql on Wavu's PostgreSQL or SQLite database, from DATABASE_URL or
  `--database-url`, with FreeRADIUS's **stock** `queries.conf` for that dialect included from the
  FreeRADIUS installation unchanged; clients read from the `nas` table, disabled NAS skipped),
  `pap`, `chap`, `mschap` (MikroTik PPP's default), `expiration` (enforces `Expiration`, caps
  `Session-Timeout` at the expiry), `expr`, `always reject`;
- `policy.d/wavu`: `acct_unique` (a stable `Acct-Unique-Session-Id` per session, which the stock
  accounting queries key on);
- `sites-enabled/wavu`: the virtual server: authorize (Message-Authenticator required, sql,
  expiration, pap/chap/mschap), authenticate, preacct/accounting (sql), session (Simultaneous-Use
  from open `radacct` rows), post-auth (a Message-Authenticator in every answer; sql logs it in `radpostauth`, without
  the typed password);
- `dictionary`: empty on purpose: Debian's package ships `dictionary.mikrotik` (vendor 14988) and
  its main dictionary includes it;
- `mikrotik/<shortname>.rsc` for every enabled MikroTik NAS (with its secret, mode 0600), or
  `mikrotik/example.rsc` when there is none: RADIUS client, PPP AAA with interim updates, hotspot,
  `/radius incoming` for CoA, the walled-garden rules.

Files holding a password or a secret are written with mode 0600, the rest 0644, DIR itself 0750
(FreeRADIUS refuses a world-writable configuration).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from .models import Nas
from .projection import RadiusPolicy
from .selectors import enabled_nas

STOCK_DIRS = ("/etc/freeradius/3.0", "/etc/freeradius", "/etc/raddb", "/usr/local/etc/raddb")
LIB_DIRS = ("/usr/lib/freeradius", "/usr/lib64/freeradius", "/usr/local/lib")
PLACEHOLDER_RADIUS_IP = "RADIUS_SERVER_IP"
PLACEHOLDER_PORTAL_IP = "PORTAL_IP"
SECRET_FILES = ("mods-enabled/sql",)


class ConfigError(ValueError):
    """The configuration cannot be generated (unsupported database, missing stock files)."""


@dataclass
class RadiusConfig:
    """Everything the generated files depend on."""

    database: dict
    out_dir: Path
    stock_dir: str = ""
    lib_dir: str = ""
    listen_address: str = "*"
    auth_port: int = 1812
    acct_port: int = 1813
    require_message_authenticator: bool = True
    reject_delay: int = 1
    user: str = ""
    group: str = ""
    radius_ip: str = PLACEHOLDER_RADIUS_IP
    portal_ip: str = PLACEHOLDER_PORTAL_IP
    policy: RadiusPolicy = field(default_factory=RadiusPolicy)
    routers: list[Nas] = field(default_factory=list)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir).resolve()
        self.stock_dir = self.stock_dir or _first_existing(STOCK_DIRS)
        self.lib_dir = self.lib_dir or _first_existing(LIB_DIRS)

    @property
    def dialect(self) -> str:
        engine = self.database.get("ENGINE", "")
        if engine.endswith("postgresql"):
            return "postgresql"
        if engine.endswith("sqlite3"):
            return "sqlite"
        raise ConfigError(f"FreeRADIUS's SQL module supports Wavu on PostgreSQL or SQLite, not {engine!r}.")

    @property
    def queries_conf(self) -> str:
        return f"{self.stock_dir}/mods-config/sql/main/{self.dialect}/queries.conf"


def freeradius_binary() -> str | None:
    """FreeRADIUS's server program (Debian: /usr/sbin/freeradius, elsewhere radiusd), or None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which("freeradius", path=search) or shutil.which("radiusd", path=search)


def _first_existing(candidates: tuple[str, ...]) -> str:
    return next((path for path in candidates if os.path.isdir(path)), candidates[0])


def database_from_url(url: str) -> dict:
    """A Django DATABASES entry from a DATABASE_URL (postgres://… or sqlite:///…)."""
    return dj_database_url.parse(url)


def quote(value: str) -> str:
    """A double-quoted FreeRADIUS configuration string, backslashes and quotes escaped. Refuses
    `${` (FreeRADIUS would read a reference to another setting there)."""
    text = str(value)
    if "${" in text:
        raise ConfigError(
            "A database name, user or password containing '${' cannot be written into FreeRADIUS's configuration."
        )
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _libpq(value) -> str:
    text = str(value)
    if text and re.fullmatch(r"[A-Za-z0-9._/:@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def postgres_conninfo(database: dict) -> str:
    """A libpq connection string for a Django PostgreSQL DATABASES entry (the sql module's `radius_db`).
    The session runs in UTC so the stock post-auth query's server-clock text means the same time."""
    parts = {
        "dbname": database.get("NAME") or "",
        "host": database.get("HOST") or "",
        "port": database.get("PORT") or "",
        "user": database.get("USER") or "",
        "password": database.get("PASSWORD") or "",
    }
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout"):
        if (database.get("OPTIONS") or {}).get(key):
            parts[key] = database["OPTIONS"][key]
    parts["application_name"] = "freeradius-wavu"
    parts["options"] = "-c TimeZone=UTC"
    return " ".join(f"{key}={_libpq(value)}" for key, value in parts.items() if value not in ("", None))


# --- the files ------------------------------------------------------------------------------------------


def render(config: RadiusConfig) -> dict[str, str]:
    """{relative path: content} of every file of the configuration directory."""
    config.dialect  # noqa: B018 - refuses an unsupported database before anything is written
    files = {
        "radiusd.conf": _radiusd_conf(config),
        "dictionary": DICTIONARY,
        "mods-enabled/sql": _sql_module(config),
        "mods-enabled/pap": "pap {\n\tnormalise = yes\n}\n",
        "mods-enabled/chap": "chap {\n}\n",
        "mods-enabled/mschap": "mschap {\n}\n",
        "mods-enabled/expiration": "expiration {\n}\n",
        "mods-enabled/expr": "expr {\n}\n",
        "mods-enabled/always": ALWAYS,
        "policy.d/wavu": POLICY,
        "sites-enabled/wavu": _site(config),
    }
    mikrotik = [nas for nas in config.routers if nas.type == Nas.Type.MIKROTIK]
    for nas in mikrotik:
        files[f"mikrotik/{nas.shortname}.rsc"] = routeros_script(config, nas)
    if not mikrotik:
        files["mikrotik/example.rsc"] = routeros_script(config, None)
    return files


def write(config: RadiusConfig, *, clean: bool = True) -> list[Path]:
    """Write the directory (replacing files Wavu generated before when `clean`); returns the paths."""
    files = render(config)
    out = config.out_dir
    if clean:
        for sub in ("mods-enabled", "sites-enabled", "policy.d", "mikrotik"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
    written = []
    for relative, content in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o750)
        path.write_text(content)
        secret = relative in SECRET_FILES or relative.startswith("mikrotik/")
        os.chmod(path, 0o600 if secret else 0o644)
        written.append(path)
    for sub in ("var/log", "var/run"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for directory in (out, out / "var", out / "var/log", out / "var/run"):
        os.chmod(directory, 0o750)
    return written


def _radiusd_conf(config: RadiusConfig) -> str:
    identity = ""
    if config.user:
        identity += f"\tuser = {config.user}\n"
    if config.group:
        identity += f"\tgroup = {config.group}\n"
    return (
        RADIUSD_CONF.replace("@@DIR@@", str(config.out_dir))
        .replace("@@LIBDIR@@", config.lib_dir)
        .replace("@@IDENTITY@@", identity)
        .replace("@@REJECT_DELAY@@", str(int(config.reject_delay)))
    )


def _sql_module(config: RadiusConfig) -> str:
    if config.dialect == "postgresql":
        connection = (
            '\tdriver = "rlm_sql_postgresql"\n'
            "\tpostgresql {\n\t\tsend_application_name = yes\n\t}\n"
            f"\tradius_db = {quote(postgres_conninfo(config.database))}\n"
        )
        disabled = "NOT p.enabled"
    else:
        name = str(config.database.get("NAME") or "")
        if not name or name.startswith("file:") or name == ":memory:":
            raise ConfigError("FreeRADIUS needs Wavu's SQLite database as a file, not an in-memory database.")
        connection = (
            '\tdriver = "rlm_sql_sqlite"\n'
            f"\tsqlite {{\n\t\tfilename = {quote(str(Path(name).resolve()))}\n\t\tbusy_timeout = 2000\n\t}}\n"
        )
        disabled = "p.enabled = 0"
    return (
        SQL_MODULE.replace("@@DIALECT@@", config.dialect)
        .replace("@@CONNECTION@@", connection)
        .replace("@@DISABLED@@", disabled)
        .replace("@@QUERIES@@", config.queries_conf)
    )


def _site(config: RadiusConfig) -> str:
    guard = MESSAGE_AUTHENTICATOR_GUARD if config.require_message_authenticator else ""
    return (
        SITE.replace("@@LISTEN@@", config.listen_address)
        .replace("@@AUTH_PORT@@", str(config.auth_port))
        .replace("@@ACCT_PORT@@", str(config.acct_port))
        .replace("@@GUARD@@", guard)
    )


def routeros_script(config: RadiusConfig, nas: Nas | None) -> str:
    """The RouterOS commands that point one router at this FreeRADIUS (an example with placeholders
    when `nas` is None). RouterOS strings are double-quoted; secrets never contain quotes or `$`."""
    policy = config.policy
    secret = nas.secret if nas is not None else "SHARED_SECRET"
    name = nas.shortname if nas is not None else "example"
    coa_port = (nas.ports if nas is not None else None) or 3799
    interim = max(policy.interim_interval, 60)
    return (
        ROUTEROS.replace("@@NAME@@", name)
        .replace("@@RADIUS_IP@@", config.radius_ip)
        .replace("@@SECRET@@", secret)
        .replace("@@AUTH_PORT@@", str(config.auth_port))
        .replace("@@ACCT_PORT@@", str(config.acct_port))
        .replace("@@COA_PORT@@", str(coa_port))
        .replace("@@INTERIM@@", f"{interim}s")
        .replace("@@LIST@@", policy.walled_garden_address_list)
        .replace("@@PORTAL_IP@@", config.portal_ip)
    )


def portal_ip_from(url: str) -> str:
    """The portal's IP address when the public URL names one, else the placeholder."""
    host = urlsplit(url).hostname or ""
    return host if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", host) else PLACEHOLDER_PORTAL_IP


def config_for(out_dir, *, database: dict, policy: RadiusPolicy, **options) -> RadiusConfig:
    """A `RadiusConfig` with the routers of the NAS registry (enabled ones)."""
    return RadiusConfig(database=database, out_dir=out_dir, policy=policy, routers=list(enabled_nas()), **options)


ALWAYS = """\
# `reject` in a section: an Access-Reject.
always reject {
	rcode = reject
}
"""

DICTIONARY = """\
# Wavu: local dictionary. Nothing to add: FreeRADIUS's own dictionaries (Debian:
# /usr/share/freeradius/dictionary) already include dictionary.mikrotik (vendor 14988:
# Mikrotik-Rate-Limit, Mikrotik-Address-List, Mikrotik-Total-Limit[-Gigawords], ...).
"""

RADIUSD_CONF = """\
# FreeRADIUS 3.2 for Wavu, generated by `wavu radius-config`. Run: freeradius -X -d @@DIR@@
# Regenerate rather than edit: the next `wavu radius-config --out` replaces these files.
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = @@DIR@@/var
sbindir = ${exec_prefix}/sbin
logdir = @@DIR@@/var/log
raddbdir = @@DIR@@
radacctdir = ${logdir}/radacct
name = freeradius
confdir = ${raddbdir}
modconfdir = ${confdir}/mods-config
certdir = ${confdir}/certs
cadir = ${confdir}/certs
run_dir = @@DIR@@/var/run
db_dir = ${raddbdir}
libdir = @@LIBDIR@@
pidfile = ${run_dir}/${name}.pid
checkrad = ${sbindir}/checkrad

max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no

log {
	destination = files
	colourise = no
	file = ${logdir}/radius.log
	syslog_facility = daemon
	stripped_names = no
	auth = yes
	auth_badpass = no
	auth_goodpass = no
}

# The stock post-auth query stamps radpostauth with the server's clock as text: keep it in UTC.
ENV {
	TZ = "UTC"
}

security {
@@IDENTITY@@	allow_core_dumps = no
	max_attributes = 200
	reject_delay = @@REJECT_DELAY@@
	status_server = yes
}

proxy_requests = no

# Threads, and the sql module's PostgreSQL connections (its pool follows these numbers): each thread
# holds one connection while it asks the database. 16 rather than FreeRADIUS's 32: on a small
# machine shared with PostgreSQL, 32 busy backends compete for the cores and lengthen every answer
# (benchmarks/radius_auth.py); 8 are open from the start so the first burst waits for none.
thread pool {
	start_servers = 8
	max_servers = 16
	min_spare_servers = 4
	max_spare_servers = 8
	max_requests_per_server = 0
	auto_limit_acct = no
}

modules {
	$INCLUDE mods-enabled/
}

instantiate {
}

policy {
	$INCLUDE policy.d/
}

$INCLUDE sites-enabled/
"""

SQL_MODULE = """\
# rlm_sql on Wavu's database. The queries are FreeRADIUS's stock ones, included unchanged, except
# two that Wavu sets first (the first definition wins):
# - client_query skips NAS disabled in Wavu's registry and gives every client the type "other";
# - simul_verify_query is empty: Simultaneous-Use counts the open radacct rows and never asks a
#   router (checkrad) whether a session is real. Wavu closes stale sessions itself. (The stock
#   SQLite verify query of 3.2.1 also looks the user up by the wrong attribute.)
sql {
	dialect = "@@DIALECT@@"
@@CONNECTION@@
	acct_table1 = "radacct"
	acct_table2 = "radacct"
	postauth_table = "radpostauth"
	authcheck_table = "radcheck"
	groupcheck_table = "radgroupcheck"
	authreply_table = "radreply"
	groupreply_table = "radgroupreply"
	usergroup_table = "radusergroup"
	delete_stale_sessions = yes

	pool {
		start = ${thread[pool].start_servers}
		min = ${thread[pool].min_spare_servers}
		max = ${thread[pool].max_servers}
		spare = ${thread[pool].max_spare_servers}
		uses = 0
		retry_delay = 30
		lifetime = 0
		idle_timeout = 60
	}

	read_clients = yes
	client_table = "nas"
	client_query = "SELECT id, nasname, shortname, 'other', secret, server FROM ${client_table} WHERE NOT EXISTS (SELECT 1 FROM network_nasprofile p WHERE p.nas_id = ${client_table}.id AND @@DISABLED@@)"

	group_attribute = "SQL-Group"
	simul_verify_query = ""

	$INCLUDE @@QUERIES@@
}
"""  # noqa: E501 - configuration lines as FreeRADIUS and RouterOS read them

POLICY = """\
# Wavu's policies.
#
# acct_unique: one Acct-Unique-Session-Id per session, the same in its Start, Interim-Updates and
# Stop (the stock accounting queries find the radacct row by it). Built from attributes that do not
# change during a session: the NAS, the NAS's session id, the port and the user.
acct_unique {
	update request {
		&Acct-Unique-Session-Id := "%{md5:%{%{NAS-IPv6-Address}:-%{NAS-IP-Address}}|%{NAS-Identifier}|%{Acct-Session-Id}|%{%{NAS-Port-ID}:-%{NAS-Port}}|%{User-Name}}"
	}
}
"""  # noqa: E501 - configuration lines as FreeRADIUS and RouterOS read them

MESSAGE_AUTHENTICATOR_GUARD = """\
		# Blast-RADIUS (CVE-2024-3596): answer nothing but a reject to an Access-Request without a
		# Message-Authenticator.
		if (!&Message-Authenticator) {
			reject
		}
"""

SITE = """\
# Wavu's virtual server: authentication and accounting on Wavu's database.
server wavu {
	listen {
		type = auth
		ipaddr = @@LISTEN@@
		port = @@AUTH_PORT@@
	}
	listen {
		type = acct
		ipaddr = @@LISTEN@@
		port = @@ACCT_PORT@@
	}

	authorize {
@@GUARD@@		# radcheck / radreply / radusergroup rows of the user (Wavu's projection of the service)
		sql
		# Expiration: reject after the expiry, and Session-Timeout no later than it
		expiration
		pap
		chap
		mschap
	}

	authenticate {
		Auth-Type PAP {
			pap
		}
		Auth-Type CHAP {
			chap
		}
		Auth-Type MS-CHAP {
			mschap
		}
	}

	preacct {
		acct_unique
	}

	accounting {
		sql
	}

	# Simultaneous-Use: counted from the open radacct rows of the user.
	session {
		sql
	}

	# Every answer carries a Message-Authenticator (Blast-RADIUS) and is logged in radpostauth, without
	# the password that was typed.
	post-auth {
		update reply {
			&Message-Authenticator := 0x00
		}
		update request {
			&User-Password !* ANY
		}
		sql
		Post-Auth-Type REJECT {
			update reply {
				&Message-Authenticator := 0x00
			}
			update request {
				&User-Password !* ANY
			}
			sql
		}
	}
}
"""

ROUTEROS = """\
# Wavu: RouterOS configuration for router "@@NAME@@", generated by `wavu radius-config`.
# Import on the router: /import file-name=@@NAME@@.rsc   (review the walled-garden part first)

# 1. RADIUS client: PPP (PPPoE) and hotspot logins go to Wavu's FreeRADIUS.
/radius add address=@@RADIUS_IP@@ secret="@@SECRET@@" service=ppp,hotspot authentication-port=@@AUTH_PORT@@ accounting-port=@@ACCT_PORT@@ timeout=3s comment="wavu"

# 2. CoA and Disconnect-Requests from Wavu (allow UDP @@COA_PORT@@ from the RADIUS/Wavu host only).
/radius incoming set accept=yes port=@@COA_PORT@@

# 3. PPP: authenticate and account through RADIUS, with interim updates.
/ppp aaa set use-radius=yes accounting=yes interim-update=@@INTERIM@@

# 4. Hotspot: every hotspot server profile uses RADIUS, with accounting and interim updates.
/ip hotspot profile set [find] use-radius=yes radius-accounting=yes radius-interim-update=@@INTERIM@@

# 5. Walled garden: an expired or suspended customer is accepted into the address list
#    "@@LIST@@" (RADIUS attribute Mikrotik-Address-List) at a throttled rate. They may reach DNS
#    and the payment portal; their web requests go to the portal; everything else is dropped.
/ip firewall address-list add list=wavu-portal address=@@PORTAL_IP@@ comment="wavu: payment portal"
/ip firewall filter add chain=forward src-address-list=@@LIST@@ dst-address-list=wavu-portal action=accept comment="wavu: unpaid may reach the portal"
/ip firewall filter add chain=forward src-address-list=@@LIST@@ protocol=udp dst-port=53 action=accept comment="wavu: unpaid may resolve names"
/ip firewall filter add chain=forward src-address-list=@@LIST@@ action=drop comment="wavu: unpaid get nothing else"
/ip firewall nat add chain=dstnat src-address-list=@@LIST@@ dst-address-list=!wavu-portal protocol=tcp dst-port=80 action=dst-nat to-addresses=@@PORTAL_IP@@ to-ports=80 comment="wavu: unpaid web goes to the portal"
# Move the four filter rules above any rule that accepts forwarded customer traffic.
"""  # noqa: E501 - configuration lines as FreeRADIUS and RouterOS read them
