"""The projection: what FreeRADIUS must answer for one service, as the RADIUS rows that say it.

`project(snapshot, policy, now)` is a pure function: no database, no clock, no settings. It takes a
`ServiceSnapshot` (what the subscription, its plan, add-ons and usage say), the ISP's `RadiusPolicy`
and the time to judge at, and returns the `DesiredRows` of that user name in `radcheck`,
`radreply` and `radusergroup`. `network.writer` makes the tables match it.

The outcomes:

- active (period running; quota left, or a plan that does nothing at its quota): password, rate
  limit, quota… → Access-Accept with the plan;
- active with the quota used up on a plan that throttles: the same at the fair-usage speed, no
  byte limit → Access-Accept, throttled;
- expired, suspended, active past its expiry, or quota used up on a plan that blocks: the
  walled-garden group, or `Auth-Type := Reject` (policy `lapsed_access`; a hotspot user is always
  rejected) → Access-Accept into the walled garden (address list + throttled rate), or Reject;
- paused: `Auth-Type := Reject` with a message → Reject;
- pending, cancelled, or no service (unknown): no rows → Reject (user not found).

Attributes written for an accepted user (`:=` everywhere, so a stale row never adds a second value):
- check: `Cleartext-Password` (FreeRADIUS checks PAP, CHAP and MS-CHAP against it),
  `Simultaneous-Use` (the plan's devices; a hotspot voucher's batch device limit),
  `Calling-Station-Id ==` (a voucher locked to its first device), `Expiration` (prepaid and hotspot: the period end, as
  Unix seconds — FreeRADIUS's `expiration` module rejects after it and lowers `Session-Timeout` to
  the seconds left at every Access-Request, so no session outlives the expiry even when rows were
  written long before. Seconds, because a date text is read in the FreeRADIUS host's time zone);
- reply: `Mikrotik-Rate-Limit` "rx/tx" from the router's view = customer upload/download, with
  bursts when the plan has them; `Session-Timeout` = the least of the ISP's longest session, the
  time quota left and a first-login hotspot package's length; `Mikrotik-Total-Limit` +
  `Mikrotik-Total-Limit-Gigawords` = the data quota left (plan + data bundles − used this period)
  when the plan acts at its quota; `Framed-IP-Address` (static IP) or `Framed-Pool`;
  `Acct-Interim-Interval`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

# Statuses and plan kinds as plain strings: the projection does not import the ORM.
ACTIVE, PENDING, EXPIRED, SUSPENDED, PAUSED, CANCELLED = (
    "active",
    "pending",
    "expired",
    "suspended",
    "paused",
    "cancelled",
)
HOTSPOT, PREPAID, POSTPAID = "hotspot", "prepaid", "postpaid"
QUOTA_NONE, QUOTA_THROTTLE, QUOTA_BLOCK = "none", "throttle", "block"

WALLED_GARDEN, REJECT = "walled_garden", "reject"
LAPSED_ACCESS_CHOICES = (WALLED_GARDEN, REJECT)

# Outcomes (what FreeRADIUS will answer), for reports and tests.
ACCEPT, THROTTLED, GARDEN, REJECTED, ABSENT = "accept", "throttled", "walled_garden", "reject", "absent"

GIGAWORD = 2**32
DEFAULT_BURST_THRESHOLD_PERCENT = 75
DEFAULT_BURST_TIME_SECONDS = 16
_RATE_RE = re.compile(r"^\d+[kM]?(/\d+[kM]?)?( \S+)*$")


@dataclass(frozen=True, order=True)
class Attr:
    """One attribute row: name, operator, value (all text, as FreeRADIUS stores them)."""

    attribute: str
    op: str
    value: str


@dataclass(frozen=True, order=True)
class GroupMembership:
    groupname: str
    priority: int = 0


@dataclass(frozen=True)
class DesiredRows:
    """Every row one user name should have in radcheck, radreply and radusergroup."""

    username: str
    outcome: str
    reason: str = ""
    check: tuple[Attr, ...] = ()
    reply: tuple[Attr, ...] = ()
    groups: tuple[GroupMembership, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.check or self.reply or self.groups)


@dataclass(frozen=True)
class GroupRows:
    """Every row a Wavu-owned group should have in radgroupcheck and radgroupreply."""

    groupname: str
    check: tuple[Attr, ...] = ()
    reply: tuple[Attr, ...] = ()


@dataclass(frozen=True)
class ServiceSnapshot:
    """What the projection needs to know about one service, read by `network.selectors`.

    Speeds in kbit/s from the customer's view; quotas in bytes and seconds (None = unlimited),
    already including data bundles; `expires_at` is the prepaid/hotspot period end (None for
    postpaid, and for a hotspot package that starts at first login and has not started);
    `first_login_seconds` is such a package's length; `calling_station_id` locks the login to one
    device (a hotspot voucher locked to its first device's MAC, as the router sends it)."""

    username: str
    password: str
    status: str
    plan_kind: str
    download_kbps: int
    upload_kbps: int
    burst_download_kbps: int | None = None
    burst_upload_kbps: int | None = None
    burst_threshold_percent: int | None = None
    burst_time_seconds: int | None = None
    data_quota_bytes: int | None = None
    time_quota_seconds: int | None = None
    quota_action: str = QUOTA_NONE
    fup_download_kbps: int | None = None
    fup_upload_kbps: int | None = None
    devices_allowed: int = 1
    expires_at: dt.datetime | None = None
    first_login_seconds: int | None = None
    data_used_bytes: int = 0
    time_used_seconds: int = 0
    static_ip: str | None = None
    calling_station_id: str = ""


@dataclass(frozen=True)
class RadiusPolicy:
    """The ISP's RADIUS settings (settings.WAVU["RADIUS_*"], docs/configuration.md)."""

    lapsed_access: str = WALLED_GARDEN
    walled_garden_group: str = "wavu-walled-garden"
    walled_garden_address_list: str = "wavu-unpaid"
    walled_garden_rate_limit: str = "256k/256k"
    walled_garden_session_timeout: int = 900
    interim_interval: int = 300
    framed_pool: str = ""
    session_timeout: int = 86400

    def __post_init__(self):
        if self.lapsed_access not in LAPSED_ACCESS_CHOICES:
            raise ValueError(f"lapsed_access must be one of {', '.join(LAPSED_ACCESS_CHOICES)}")
        if not _RATE_RE.match(self.walled_garden_rate_limit):
            raise ValueError(f"{self.walled_garden_rate_limit!r} is not a MikroTik rate limit such as 256k/512k")
        for name in ("walled_garden_session_timeout", "interim_interval", "session_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")
        if not self.walled_garden_group or not self.walled_garden_address_list:
            raise ValueError("the walled-garden group and address list need names")


# --- formatting -------------------------------------------------------------------------------------


def rate(kbps: int) -> str:
    """A speed as MikroTik writes it: whole megabits as `M`, otherwise kilobits (`k`)."""
    kbps = int(kbps)
    return f"{kbps // 1000}M" if kbps and kbps % 1000 == 0 else f"{kbps}k"


def rate_limit(
    upload_kbps: int,
    download_kbps: int,
    *,
    burst_upload_kbps: int | None = None,
    burst_download_kbps: int | None = None,
    burst_threshold_percent: int | None = None,
    burst_time_seconds: int | None = None,
) -> str:
    """`Mikrotik-Rate-Limit`: "rx/tx [burst-rx/burst-tx threshold-rx/threshold-tx time-rx/time-tx]".

    The router's rx is what it receives from the customer (upload), tx what it sends (download).
    Bursts need both burst rates; the threshold defaults to 75 % of the rate and the burst time to
    16 s (MikroTik applies a burst only when all three are given)."""
    text = f"{rate(upload_kbps)}/{rate(download_kbps)}"
    if burst_upload_kbps and burst_download_kbps:
        percent = burst_threshold_percent or DEFAULT_BURST_THRESHOLD_PERCENT
        seconds = burst_time_seconds or DEFAULT_BURST_TIME_SECONDS
        threshold_up, threshold_down = upload_kbps * percent // 100, download_kbps * percent // 100
        text += (
            f" {rate(burst_upload_kbps)}/{rate(burst_download_kbps)}"
            f" {rate(threshold_up)}/{rate(threshold_down)} {seconds}/{seconds}"
        )
    return text


def total_limit(remaining_bytes: int) -> tuple[int, int]:
    """(Mikrotik-Total-Limit, Mikrotik-Total-Limit-Gigawords) for a byte count: low 32 bits, high bits.

    A count that is an exact multiple of 4 GiB is written one byte short, so the low word is never
    0 next to a non-zero Gigawords (a 0 limit could read as "no limit")."""
    remaining_bytes = max(int(remaining_bytes), 0)
    if remaining_bytes and remaining_bytes % GIGAWORD == 0:
        remaining_bytes -= 1
    return remaining_bytes % GIGAWORD, remaining_bytes // GIGAWORD


# --- the projection ---------------------------------------------------------------------------------


def absent(username: str, reason: str) -> DesiredRows:
    return DesiredRows(username=username, outcome=ABSENT, reason=reason)


def project(
    snapshot: ServiceSnapshot | None, policy: RadiusPolicy, now: dt.datetime, *, username: str = ""
) -> DesiredRows:
    """The rows `snapshot.username` should have at `now` under `policy` (see the module docstring).

    `snapshot` None means no service has the user name `username`: no rows (FreeRADIUS rejects an
    unknown user)."""
    if snapshot is None:
        return absent(username, "no service has this user name")
    status = snapshot.status
    if status in (PENDING, CANCELLED):
        return absent(snapshot.username, f"service {status}")
    if status == PAUSED:
        return _reject(snapshot, "Service paused", "service paused")
    if status in (EXPIRED, SUSPENDED):
        return _lapsed(snapshot, policy, status)
    if status != ACTIVE:
        return absent(snapshot.username, f"unknown status {status!r}")
    if snapshot.expires_at is not None and snapshot.expires_at <= now:
        return _lapsed(snapshot, policy, "period ended")

    data_left = _left(snapshot.data_quota_bytes, snapshot.data_used_bytes)
    time_left = _left(snapshot.time_quota_seconds, snapshot.time_used_seconds)
    quota_used_up = data_left == 0 or time_left == 0
    if quota_used_up and snapshot.quota_action == QUOTA_BLOCK:
        return _lapsed(snapshot, policy, "quota used up")
    throttled = quota_used_up and snapshot.quota_action == QUOTA_THROTTLE

    check = [*_login_checks(snapshot)]
    if snapshot.expires_at is not None:
        check.append(Attr("Expiration", ":=", str(int(snapshot.expires_at.timestamp()))))

    if throttled:
        limit = rate_limit(snapshot.fup_upload_kbps or 0, snapshot.fup_download_kbps or 0)
    else:
        limit = rate_limit(
            snapshot.upload_kbps,
            snapshot.download_kbps,
            burst_upload_kbps=snapshot.burst_upload_kbps,
            burst_download_kbps=snapshot.burst_download_kbps,
            burst_threshold_percent=snapshot.burst_threshold_percent,
            burst_time_seconds=snapshot.burst_time_seconds,
        )
    reply = [Attr("Mikrotik-Rate-Limit", ":=", limit)]
    timeouts = [t for t in (policy.session_timeout or None, snapshot.first_login_seconds) if t]
    enforced = snapshot.quota_action != QUOTA_NONE and not throttled
    if time_left is not None and enforced:
        timeouts.append(time_left)
    if timeouts:
        reply.append(Attr("Session-Timeout", ":=", str(max(min(timeouts), 1))))
    if data_left is not None and enforced:
        low, high = total_limit(data_left)
        reply.append(Attr("Mikrotik-Total-Limit", ":=", str(low)))
        reply.append(Attr("Mikrotik-Total-Limit-Gigawords", ":=", str(high)))
    reply.extend(_addressing(snapshot, policy))
    return DesiredRows(
        username=snapshot.username,
        outcome=THROTTLED if throttled else ACCEPT,
        reason="quota used up: fair-usage speed" if throttled else "active",
        check=tuple(check),
        reply=tuple(reply),
    )


def walled_garden_group(policy: RadiusPolicy) -> GroupRows:
    """The walled-garden group's rows: the router puts the customer's address in an address list
    (its firewall redirects web traffic to the payment page and drops the rest), at a throttled
    rate, for a short session so the next login after paying gets the full service."""
    reply = [
        Attr("Mikrotik-Address-List", ":=", policy.walled_garden_address_list),
        Attr("Mikrotik-Rate-Limit", ":=", policy.walled_garden_rate_limit),
    ]
    if policy.walled_garden_session_timeout:
        reply.append(Attr("Session-Timeout", ":=", str(policy.walled_garden_session_timeout)))
    return GroupRows(groupname=policy.walled_garden_group, reply=tuple(reply))


def _left(quota: int | None, used: int) -> int | None:
    return None if quota is None else max(int(quota) - max(int(used), 0), 0)


def _login_checks(snapshot: ServiceSnapshot) -> list[Attr]:
    """Password and device count; with a device lock, `Calling-Station-Id ==` (a comparison: the sql
    module merges the user's check rows only when it matches, so another device finds no password
    and is rejected)."""
    checks = [
        Attr("Cleartext-Password", ":=", snapshot.password),
        Attr("Simultaneous-Use", ":=", str(max(snapshot.devices_allowed, 1))),
    ]
    if snapshot.calling_station_id:
        checks.append(Attr("Calling-Station-Id", "==", snapshot.calling_station_id))
    return checks


def _addressing(snapshot: ServiceSnapshot, policy: RadiusPolicy) -> list[Attr]:
    rows = []
    if snapshot.static_ip:
        rows.append(Attr("Framed-IP-Address", ":=", snapshot.static_ip))
    elif policy.framed_pool:
        rows.append(Attr("Framed-Pool", ":=", policy.framed_pool))
    if policy.interim_interval:
        rows.append(Attr("Acct-Interim-Interval", ":=", str(policy.interim_interval)))
    return rows


_LAPSED_MESSAGES = {
    EXPIRED: "Subscription expired: pay to reconnect",
    SUSPENDED: "Service suspended: pay to reconnect",
    "period ended": "Subscription expired: pay to reconnect",
    "quota used up": "Data or time quota used up: buy a bundle to continue",
}


def _lapsed(snapshot: ServiceSnapshot, policy: RadiusPolicy, why: str) -> DesiredRows:
    """Expired, suspended, or blocked at its quota: the walled garden, or a reject. A hotspot user is
    always rejected: the hotspot's own login page is where they buy the next package."""
    message = _LAPSED_MESSAGES.get(why, "Service unavailable")
    if policy.lapsed_access == REJECT or snapshot.plan_kind == HOTSPOT:
        return _reject(snapshot, message, why)
    return DesiredRows(
        username=snapshot.username,
        outcome=GARDEN,
        reason=why,
        check=tuple(_login_checks(snapshot)),
        reply=tuple(_addressing(snapshot, policy)),
        groups=(GroupMembership(policy.walled_garden_group, 0),),
    )


def _reject(snapshot: ServiceSnapshot, message: str, why: str) -> DesiredRows:
    return DesiredRows(
        username=snapshot.username,
        outcome=REJECTED,
        reason=why,
        check=(Attr("Auth-Type", ":=", "Reject"),),
        reply=(Attr("Reply-Message", ":=", message),),
    )
