"""`wavu radius-config --out DIR`: a FreeRADIUS 3.2 configuration on Wavu's database that FreeRADIUS
itself accepts (`freeradius -C`), and RouterOS scripts for the routers of the registry."""

from __future__ import annotations

import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from wavu.network import radius_config, services
from wavu.network.projection import RadiusPolicy

from .support import NAS_SECRET, radius_database, require_freeradius

# Transactional: FreeRADIUS (another process) reads what the test wrote, so it must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def database_url(database: dict) -> str:
    if connection.vendor == "sqlite":
        return f"sqlite:///{database['NAME']}"
    auth = database.get("USER") or ""
    if database.get("PASSWORD"):
        auth += f":{database['PASSWORD']}"
    host = f"{database.get('HOST') or '127.0.0.1'}:{database.get('PORT') or 5432}"
    return f"postgres://{auth}@{host}/{database['NAME']}"


def generate(tmp_path: Path, *args: str) -> tuple[Path, str]:
    out = tmp_path / "raddb"
    url = database_url(radius_database(tmp_path))
    buffer = StringIO()
    call_command("radius_config", "--out", str(out), "--database-url", url, *args, stdout=buffer)
    return out, buffer.getvalue()


def test_the_generated_configuration_is_accepted_by_freeradius(tmp_path):
    require_freeradius()
    services.create_nas(address="10.20.0.1", shortname="kasarani-core", secret=NAS_SECRET, type="mikrotik")

    out, said = generate(tmp_path, "--radius-ip", "10.0.0.5")

    assert "Checked: `" in said and "-C` accepts it" in said
    for name in ("radiusd.conf", "mods-enabled/sql", "sites-enabled/wavu", "policy.d/wavu", "dictionary"):
        assert (out / name).is_file()


def test_the_sql_module_runs_freeradius_stock_queries_and_reads_its_clients_from_nas(tmp_path):
    out, _ = generate(tmp_path, "--no-check")

    sql = (out / "mods-enabled/sql").read_text()
    dialect = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    assert f'dialect = "{dialect}"' in sql
    assert f"$INCLUDE /etc/freeradius/3.0/mods-config/sql/main/{dialect}/queries.conf" in sql
    assert "read_clients = yes" in sql and 'client_table = "nas"' in sql
    assert "network_nasprofile" in sql  # disabled routers are skipped
    for table in ("radcheck", "radreply", "radgroupcheck", "radgroupreply", "radusergroup", "radacct", "radpostauth"):
        assert f'"{table}"' in sql
    site = (out / "sites-enabled/wavu").read_text()
    assert "if (!&Message-Authenticator)" in site and "expiration" in site and "acct_unique" in site
    assert "&Message-Authenticator := 0x00" in site and "&User-Password !* ANY" in site


def test_message_authenticator_can_be_left_optional_for_old_routers(tmp_path):
    out, _ = generate(tmp_path, "--no-check", "--no-require-message-authenticator")

    assert "if (!&Message-Authenticator)" not in (out / "sites-enabled/wavu").read_text()


def test_each_enabled_mikrotik_router_gets_its_routeros_script(tmp_path):
    services.create_nas(address="10.20.0.1", shortname="kasarani-core", secret=NAS_SECRET, type="mikrotik")
    services.create_nas(address="10.20.0.2", shortname="old-core", secret=NAS_SECRET, type="mikrotik", enabled=False)
    services.create_nas(address="10.20.0.3", shortname="ruaka-ap", secret=NAS_SECRET, type="other")

    out, _ = generate(tmp_path, "--no-check", "--radius-ip", "10.0.0.5", "--portal-ip", "10.0.0.80")

    assert sorted(p.name for p in (out / "mikrotik").iterdir()) == ["kasarani-core.rsc"]
    script = (out / "mikrotik/kasarani-core.rsc").read_text()
    assert f'/radius add address=10.0.0.5 secret="{NAS_SECRET}" service=ppp,hotspot' in script
    assert "/radius incoming set accept=yes port=3799" in script
    assert "/ppp aaa set use-radius=yes accounting=yes interim-update=300s" in script
    assert "/ip hotspot profile set [find] use-radius=yes radius-accounting=yes" in script
    assert "src-address-list=wavu-unpaid" in script and "to-addresses=10.0.0.80" in script


def test_without_routers_an_example_script_shows_the_placeholders_to_fill_in(tmp_path):
    out, said = generate(tmp_path, "--no-check")

    script = (out / "mikrotik/example.rsc").read_text()
    assert 'address=RADIUS_SERVER_IP secret="SHARED_SECRET"' in script
    assert "--radius-ip" in said


def test_files_holding_the_database_password_or_router_secrets_are_private(tmp_path):
    services.create_nas(address="10.20.0.1", shortname="kasarani-core", secret=NAS_SECRET, type="mikrotik")

    out, _ = generate(tmp_path, "--no-check")

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(out / "mods-enabled/sql") == 0o600
    assert mode(out / "mikrotik/kasarani-core.rsc") == 0o600
    assert mode(out / "radiusd.conf") == 0o644
    assert mode(out) == 0o750 and not mode(out) & stat.S_IWOTH


def test_freeradius_refusing_the_configuration_is_an_error_with_its_reason(tmp_path):
    require_freeradius()

    with pytest.raises(CommandError) as refused:
        generate(tmp_path, "--freeradius-dir", str(tmp_path / "no-freeradius-here"))

    assert "refused the configuration" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [("mysql://radius@db/radius", "PostgreSQL or SQLite"), ("sqlite://:memory:", "in-memory")],
    ids=["mysql", "sqlite-in-memory"],
)
def test_a_database_freeradius_cannot_share_is_refused_before_anything_is_written(tmp_path, url, reason):
    with pytest.raises(CommandError) as refused:
        call_command("radius_config", "--out", str(tmp_path / "raddb"), "--database-url", url, "--no-check")

    assert reason in str(refused.value)
    assert not (tmp_path / "raddb").exists()


def test_the_postgresql_connection_string_quotes_what_libpq_needs_and_runs_in_utc():
    info = radius_config.postgres_conninfo(
        {"NAME": "wavu", "HOST": "db.isp.lan", "PORT": 5432, "USER": "radius", "PASSWORD": "it's a pass"}
    )

    assert info.startswith("dbname=wavu host=db.isp.lan port=5432 user=radius password='it\\'s a pass'")
    assert "options='-c TimeZone=UTC'" in info
    assert radius_config.quote('say "hi"') == '"say \\"hi\\""'
    with pytest.raises(radius_config.ConfigError):
        radius_config.quote("pa${ss}")


def test_the_portal_address_comes_from_the_public_url_when_it_is_an_ip():
    assert radius_config.portal_ip_from("http://10.0.0.80:8000") == "10.0.0.80"
    assert radius_config.portal_ip_from("https://billing.isp.co.ke") == radius_config.PLACEHOLDER_PORTAL_IP


def test_the_walled_garden_address_list_in_the_script_is_the_one_radius_sends(tmp_path):
    config = radius_config.RadiusConfig(
        database={"ENGINE": "django.db.backends.postgresql", "NAME": "wavu"},
        out_dir=tmp_path,
        policy=RadiusPolicy(walled_garden_address_list="deni"),
    )

    script = radius_config.routeros_script(config, None)

    assert "src-address-list=deni" in script and "wavu-unpaid" not in script
