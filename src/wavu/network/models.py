"""Network: FreeRADIUS's tables in Wavu's database, the NAS registry, and Wavu's bookkeeping of what it wrote.

The first nine models are FreeRADIUS's standard SQL schema (`raddb/mods-config/sql/main/postgresql/
schema.sql` of FreeRADIUS 3.2) under FreeRADIUS's own table and column names, so its stock
`queries.conf` for PostgreSQL and SQLite runs on them unchanged: same columns, same types on
PostgreSQL (`text`, `inet`, `bigint`, `timestamp with time zone`), the stock indexes, the unique
`acctuniqueid`. Wavu migrates them. Who writes what:

- Wavu owns `radcheck`, `radreply` and `radusergroup` (the projection of each subscription,
  `network.writer`), the walled-garden group in `radgroupcheck`/`radgroupreply`, and `nas` (the NAS
  registry, `network.services`). ISP-made groups in `radgroup*` are left alone.
- FreeRADIUS writes `radacct` (accounting: one row per session, updated in place by interim updates
  and the stop; octet counters already include the Gigawords), `radpostauth` (one row per answer)
  and `nasreload` (when a NAS last rebooted, from Accounting-On/Off).

Column names are lower case because PostgreSQL folds the stock schema's unquoted mixed-case names.
`RadAcct.radacctid` only grows, so a reader can walk new sessions by it; interim updates change
rows in place (`acctupdatetime`).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from wavu.subscriptions.models import Subscription

from .fields import RadiusTimestampField


def _attribute_str(row) -> str:
    value = "********" if row.attribute.lower().endswith("password") else row.value
    return f"{getattr(row, 'username', None) or getattr(row, 'groupname', '')}: {row.attribute} {row.op} {value}"


class RadCheck(models.Model):
    """Check items of a user: `Cleartext-Password`, `Simultaneous-Use`, `Expiration`, `Auth-Type`."""

    id = models.AutoField(primary_key=True)
    username = models.TextField(default="", db_default="")
    attribute = models.TextField(default="", db_default="")
    op = models.CharField(max_length=2, default="==", db_default="==")
    value = models.TextField(default="", db_default="")

    class Meta:
        db_table = "radcheck"
        verbose_name = "RADIUS check item"
        indexes = [models.Index(fields=["username", "attribute"], name="radcheck_username")]

    def __str__(self):
        return _attribute_str(self)


class RadGroupCheck(models.Model):
    id = models.AutoField(primary_key=True)
    groupname = models.TextField(default="", db_default="")
    attribute = models.TextField(default="", db_default="")
    op = models.CharField(max_length=2, default="==", db_default="==")
    value = models.TextField(default="", db_default="")

    class Meta:
        db_table = "radgroupcheck"
        verbose_name = "RADIUS group check item"
        indexes = [models.Index(fields=["groupname", "attribute"], name="radgroupcheck_groupname")]

    def __str__(self):
        return _attribute_str(self)


class RadGroupReply(models.Model):
    """Reply items of a group, e.g. the walled garden's address list and throttled rate."""

    id = models.AutoField(primary_key=True)
    groupname = models.TextField(default="", db_default="")
    attribute = models.TextField(default="", db_default="")
    op = models.CharField(max_length=2, default="=", db_default="=")
    value = models.TextField(default="", db_default="")

    class Meta:
        db_table = "radgroupreply"
        verbose_name = "RADIUS group reply item"
        indexes = [models.Index(fields=["groupname", "attribute"], name="radgroupreply_groupname")]

    def __str__(self):
        return _attribute_str(self)


class RadReply(models.Model):
    """Reply items of a user: rate limit, session timeout, quota, address, interim interval."""

    id = models.AutoField(primary_key=True)
    username = models.TextField(default="", db_default="")
    attribute = models.TextField(default="", db_default="")
    op = models.CharField(max_length=2, default="=", db_default="=")
    value = models.TextField(default="", db_default="")

    class Meta:
        db_table = "radreply"
        verbose_name = "RADIUS reply item"
        indexes = [models.Index(fields=["username", "attribute"], name="radreply_username")]

    def __str__(self):
        return _attribute_str(self)


class RadUserGroup(models.Model):
    """A user's membership of a group (lowest priority first)."""

    id = models.AutoField(primary_key=True)
    username = models.TextField(default="", db_default="")
    groupname = models.TextField(default="", db_default="")
    priority = models.IntegerField(default=0, db_default=0)

    class Meta:
        db_table = "radusergroup"
        verbose_name = "RADIUS user group"
        indexes = [models.Index(fields=["username"], name="radusergroup_username")]

    def __str__(self):
        return f"{self.username} in {self.groupname} ({self.priority})"


class RadAcct(models.Model):
    """One accounting session, written by FreeRADIUS (start, interim updates, stop)."""

    radacctid = models.BigAutoField(primary_key=True)
    acctsessionid = models.TextField()
    acctuniqueid = models.TextField()
    username = models.TextField(null=True, blank=True)
    realm = models.TextField(null=True, blank=True)
    nasipaddress = models.GenericIPAddressField()
    nasportid = models.TextField(null=True, blank=True)
    nasporttype = models.TextField(null=True, blank=True)
    acctstarttime = RadiusTimestampField(null=True, blank=True)
    acctupdatetime = RadiusTimestampField(null=True, blank=True)
    acctstoptime = RadiusTimestampField(null=True, blank=True)
    acctinterval = models.BigIntegerField(null=True, blank=True)
    acctsessiontime = models.BigIntegerField(null=True, blank=True)
    acctauthentic = models.TextField(null=True, blank=True)
    connectinfo_start = models.TextField(null=True, blank=True)
    connectinfo_stop = models.TextField(null=True, blank=True)
    acctinputoctets = models.BigIntegerField(null=True, blank=True, help_text="from the customer (upload), bytes")
    acctoutputoctets = models.BigIntegerField(null=True, blank=True, help_text="to the customer (download), bytes")
    calledstationid = models.TextField(null=True, blank=True)
    callingstationid = models.TextField(null=True, blank=True)
    acctterminatecause = models.TextField(null=True, blank=True)
    servicetype = models.TextField(null=True, blank=True)
    framedprotocol = models.TextField(null=True, blank=True)
    framedipaddress = models.GenericIPAddressField(null=True, blank=True)
    framedipv6address = models.GenericIPAddressField(null=True, blank=True)
    framedipv6prefix = models.GenericIPAddressField(null=True, blank=True)  # inet: holds a prefix
    framedinterfaceid = models.TextField(null=True, blank=True)
    delegatedipv6prefix = models.GenericIPAddressField(null=True, blank=True)  # inet: holds a prefix
    radius_class = models.TextField(db_column="class", null=True, blank=True)

    class Meta:
        db_table = "radacct"
        verbose_name = "RADIUS accounting session"
        # The stock "AcctUniqueId text NOT NULL UNIQUE" (the stock queries' ON CONFLICT (AcctUniqueId)).
        constraints = [models.UniqueConstraint(fields=["acctuniqueid"], name="radacct_acctuniqueid_key")]
        indexes = [
            # The stock schema's indexes: open sessions by unique id (interim/stop updates), open
            # sessions of a NAS (Accounting-On/Off), statistics, Class.
            models.Index(fields=["acctuniqueid"], name="radacct_active_session_idx", condition=Q(acctstoptime=None)),
            models.Index(
                fields=["nasipaddress", "acctstarttime"], name="radacct_bulk_close", condition=Q(acctstoptime=None)
            ),  # fmt: skip
            models.Index(fields=["acctstarttime", "username"], name="radacct_start_user_idx"),
            models.Index(fields=["radius_class"], name="radacct_class_idx"),
            # Wavu's: open sessions of a user, for Simultaneous-Use (simul_count_query) and "who is
            # online", without scanning the table.
            models.Index(fields=["username"], name="radacct_active_user_idx", condition=Q(acctstoptime=None)),
        ]

    def __str__(self):
        return f"{self.username} {self.acctsessionid} @ {self.nasipaddress}"


class RadPostAuth(models.Model):
    """One authentication answer (Access-Accept / Access-Reject), written by FreeRADIUS's post-auth."""

    id = models.BigAutoField(primary_key=True)
    username = models.TextField()
    password = models.TextField(db_column="pass", null=True, blank=True)
    reply = models.TextField(null=True, blank=True)
    calledstationid = models.TextField(null=True, blank=True)
    callingstationid = models.TextField(null=True, blank=True)
    authdate = models.DateTimeField(db_default=Now())
    radius_class = models.TextField(db_column="class", null=True, blank=True)

    class Meta:
        db_table = "radpostauth"
        verbose_name = "RADIUS authentication"
        indexes = [
            models.Index(fields=["username"], name="radpostauth_username_idx"),
            models.Index(fields=["radius_class"], name="radpostauth_class_idx"),
        ]

    def __str__(self):
        return f"{self.username} {self.reply}"


class Nas(models.Model):
    """A router (NAS) that may talk RADIUS to FreeRADIUS: FreeRADIUS loads its clients from this
    table (`read_clients = yes`). Written only through `network.services` (validated, audited).

    `nasname` is the address the router's RADIUS packets come from (an IP address or a network in
    CIDR form); `ports` is where it listens for CoA and Disconnect-Requests (MikroTik: 3799);
    `secret` is the shared secret (FreeRADIUS needs it in clear). `require_ma` and
    `limit_proxy_state` are the columns FreeRADIUS ≥ 3.2.5 added (Blast-RADIUS hardening)."""

    class Type(models.TextChoices):
        MIKROTIK = "mikrotik", "MikroTik RouterOS"
        OTHER = "other", "Other (generic RADIUS)"

    id = models.AutoField(primary_key=True)
    nasname = models.TextField(help_text="the router's address (IP, or a network in CIDR form)")
    shortname = models.TextField(help_text="a short unique name, e.g. kasarani-core")
    type = models.TextField(choices=Type.choices, default=Type.OTHER, db_default=Type.OTHER)
    ports = models.IntegerField(null=True, blank=True, help_text="CoA / Disconnect port on the router")
    secret = models.TextField()
    server = models.TextField(null=True, blank=True, help_text="FreeRADIUS virtual server (empty: the default)")
    community = models.TextField(null=True, blank=True)
    description = models.TextField(null=True, blank=True)
    require_ma = models.TextField(default="yes", db_default="auto")
    limit_proxy_state = models.TextField(default="auto", db_default="auto")

    class Meta:
        db_table = "nas"
        verbose_name = "NAS (router)"
        verbose_name_plural = "NAS (routers)"
        ordering = ["shortname"]
        constraints = [
            # FreeRADIUS refuses a second client with the same address; Wavu refuses it up front.
            models.UniqueConstraint(fields=["nasname"], name="nas_nasname"),
            models.UniqueConstraint(fields=["shortname"], name="nas_shortname"),
        ]

    def __str__(self):
        return f"{self.shortname} ({self.nasname})"


class NasReload(models.Model):
    """When a NAS last (re)started, from its Accounting-On/Off; the stock Simultaneous-Use queries
    ignore sessions opened before it."""

    nasipaddress = models.GenericIPAddressField(primary_key=True)
    reloadtime = RadiusTimestampField()

    class Meta:
        db_table = "nasreload"
        verbose_name = "NAS reload"

    def __str__(self):
        return f"{self.nasipaddress} reloaded {self.reloadtime}"


# --- Wavu's side of the registry and of the projection ---------------------------------------------


class NasProfile(models.Model):
    """Wavu's fields of a NAS that FreeRADIUS's `nas` table has no column for. A disabled NAS stays
    in the registry but FreeRADIUS does not load it (the generated `client_query` skips it)."""

    nas = models.OneToOneField(Nas, on_delete=models.CASCADE, primary_key=True, related_name="profile")
    site = models.CharField(max_length=100, blank=True, help_text="where the router is, e.g. Kasarani POP")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "NAS profile"

    def __str__(self):
        return f"{self.nas_id} at {self.site or '—'}"


class RadiusAccount(models.Model):
    """The RADIUS user name Wavu last projected a subscription to. When a service's username
    changes, the writer removes the rows of the old name in the same transaction; the row is also
    what concurrent syncs of one service lock, so they queue instead of writing rows twice."""

    subscription = models.OneToOneField(
        Subscription, on_delete=models.CASCADE, primary_key=True, related_name="radius_account"
    )
    username = models.TextField()
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "RADIUS account"

    def __str__(self):
        return f"{self.username} (subscription {self.subscription_id})"


class RadiusSyncRequest(models.Model):
    """A service whose RADIUS rows must be re-projected: written in the transaction of its lifecycle
    event (`signals.request_sync`), at most one row per service, taken and deleted by the workers'
    drain (`writer.drain_sync_requests`). A change that rolls back leaves none; one that commits is
    never lost, whatever happens to the process afterwards."""

    subscription = models.OneToOneField(
        Subscription, on_delete=models.CASCADE, primary_key=True, related_name="radius_sync_request"
    )
    requested_at = models.DateTimeField()

    class Meta:
        verbose_name = "RADIUS sync request"

    def __str__(self):
        return f"sync subscription {self.subscription_id}"


class Reconciliation(models.Model):
    """One full reconciliation: every service's RADIUS rows compared with its projection and
    repaired. `details` holds the counts per table, and up to 100 repaired and orphan user names."""

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    services_checked = models.PositiveIntegerField(default=0)
    users_repaired = models.PositiveIntegerField(default=0, help_text="services whose rows differed")
    orphans_removed = models.PositiveIntegerField(default=0, help_text="user names no service has")
    rows_added = models.PositiveIntegerField(default=0)
    rows_removed = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"reconciliation {self.started_at:%Y-%m-%d %H:%M}: {self.users_repaired} repaired"

    @property
    def drift_found(self) -> bool:
        return bool(self.users_repaired or self.orphans_removed or self.details.get("groups_repaired"))


# --- usage, quotas and CoA (issue 5, items 4–6) ------------------------------------------------------


class SessionCounter(models.Model):
    """The counters of one `radacct` session as the usage ingester last counted them (`network.usage`).

    A delta is what the session's cumulative counters grew by since this row; the row then takes the
    new counters. `closed` once the session's stop was counted: a stopped radacct row never changes
    again (the stock queries only update open rows). No foreign key constraint on `radacct`:
    FreeRADIUS's table may be archived or pruned without Wavu."""

    radacct = models.OneToOneField(
        RadAcct, on_delete=models.DO_NOTHING, db_constraint=False, primary_key=True, related_name="usage_counter"
    )
    subscription = models.ForeignKey(Subscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    input_octets = models.BigIntegerField(default=0, help_text="upload, bytes (Gigawords included)")
    output_octets = models.BigIntegerField(default=0, help_text="download, bytes (Gigawords included)")
    session_seconds = models.BigIntegerField(default=0)
    closed = models.BooleanField(default=False)
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "session counter"
        indexes = [models.Index(fields=["radacct"], name="sessioncounter_open", condition=Q(closed=False))]

    def __str__(self):
        return f"session {self.radacct_id}: {self.input_octets}↑ {self.output_octets}↓ {self.session_seconds}s"


class UsageBucket(models.Model):
    """A service's usage in one clock hour (UTC), from all its sessions and devices."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="usage_buckets")
    hour = models.DateTimeField()
    bytes_in = models.BigIntegerField(default=0, help_text="upload (from the customer), bytes")
    bytes_out = models.BigIntegerField(default=0, help_text="download (to the customer), bytes")
    seconds = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "usage (hour)"
        verbose_name_plural = "usage (hours)"
        ordering = ["-hour"]
        constraints = [models.UniqueConstraint(fields=["subscription", "hour"], name="usagebucket_one_per_hour")]

    def __str__(self):
        return f"{self.subscription_id} @ {self.hour:%Y-%m-%d %H:00}: {self.bytes_in + self.bytes_out} B"


class PeriodUsage(models.Model):
    """A service's usage in one billing period (keyed by the period's start): what quotas count."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="period_usages")
    period_start = models.DateTimeField()
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    seconds = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "usage (period)"
        verbose_name_plural = "usage (periods)"
        constraints = [
            models.UniqueConstraint(fields=["subscription", "period_start"], name="periodusage_one_per_period")
        ]

    def __str__(self):
        return f"{self.subscription_id} from {self.period_start:%Y-%m-%d}: {self.data_bytes} B, {self.seconds} s"

    @property
    def data_bytes(self) -> int:
        return self.bytes_in + self.bytes_out


class UsageCursor(models.Model):
    """The ingester's single row: where new `radacct` rows start, and its lock (runs queue on it)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    floor_id = models.BigIntegerField(default=0, help_text="radacct rows above this id are checked for new sessions")
    seen_id = models.BigIntegerField(default=0, help_text="the highest radacct id at the last run")
    ran_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "usage cursor"

    def __str__(self):
        return f"usage cursor: new sessions above {self.floor_id}"


class QuotaEvent(models.Model):
    """A service reached 80 % or 100 % of its data or time quota in a period: recorded once per
    (service, period, threshold); notifications (SMS) are sent from these."""

    class Threshold(models.IntegerChoices):
        WARNING = 80, "80 %"
        REACHED = 100, "100 %"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="quota_events")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField(choices=Threshold.choices)
    action = models.CharField(max_length=10, help_text="the plan's quota action when it was reached")
    used_bytes = models.BigIntegerField(default=0)
    quota_bytes = models.BigIntegerField(null=True, blank=True)
    used_seconds = models.BigIntegerField(default=0)
    quota_seconds = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start", "threshold"], name="quotaevent_once_per_period"
            )
        ]

    def __str__(self):
        return f"{self.subscription_id}: {self.threshold} % of quota ({self.period_start:%Y-%m-%d})"


class CoaAttempt(models.Model):
    """One CoA-Request or Disconnect-Request sent to a router about a live session, and its answer."""

    class Kind(models.TextChoices):
        COA = "coa", "CoA-Request"
        DISCONNECT = "disconnect", "Disconnect-Request"

    class Result(models.TextChoices):
        ACK = "ack", "ACK"
        NAK = "nak", "NAK"
        TIMEOUT = "timeout", "no answer"
        ERROR = "error", "not sent"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="coa_attempts"
    )
    radacct = models.ForeignKey(
        RadAcct, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+"
    )
    username = models.TextField()
    nas_address = models.GenericIPAddressField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    attributes = models.JSONField(default=dict, blank=True)
    result = models.CharField(max_length=10, choices=Result.choices)
    error_cause = models.PositiveIntegerField(null=True, blank=True, help_text="RFC 5176 Error-Cause")
    detail = models.TextField(blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "CoA / Disconnect attempt"
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_kind_display()} {self.username} @ {self.nas_address}: {self.result}"
