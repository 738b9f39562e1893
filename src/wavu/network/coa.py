"""CoA and Disconnect (RFC 5176): tell the routers of a user's live sessions what its rows say now.

RADIUS rows only matter at the next login. When a service changes while its customer is online
(suspended, reactivated, plan changed, quota used up), the router must be told. Which sessions a
sync changed, and the job that calls this module, are in `network.sessions`; this module is the
protocol side and imports neither the writer nor the jobs:

- `change_live_session(username)` (the CoA job's body) reads the user's rows as they are now and sends,
  for each open session, to the router the session is on (the `nas` row of `radacct.nasipaddress`:
  its secret and CoA port, `nas.ports`, default 3799):
  - accepted or throttled: a CoA-Request with the new `Mikrotik-Rate-Limit`;
  - walled garden: a CoA-Request with `Mikrotik-Address-List` and the garden's `Mikrotik-Rate-Limit`;
  - rejected or no rows (paused, cancelled, blocked with lapsed access = reject): a Disconnect-Request;
  - back from the walled garden: a Disconnect-Request (a CoA cannot take an address out of the
    router's address list; the customer's router redials at once and gets the full service).
  The session is named by `User-Name`, `Acct-Session-Id` (and `Framed-IP-Address` when known); every
  request carries a Message-Authenticator. A CoA that is refused (CoA-NAK) is followed by a
  Disconnect-Request. Each request is sent up to `COA_TRIES` times (`COA_TIMEOUT` seconds each);
  every answer, or its absence, is recorded as a `CoaAttempt` (kind, attributes, ACK/NAK/timeout,
  Error-Cause). When a router did not answer, the job fails and is retried with backoff; each retry
  reads the rows again, so it sends what is true then.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from wavu.core import clock
from wavu.subscriptions.models import Subscription

from .dictionary import dictionary
from .models import CoaAttempt, Nas, RadAcct, RadCheck, RadGroupReply, RadReply, RadUserGroup
from .selectors import radius_policy

logger = logging.getLogger(__name__)

DEFAULT_COA_PORT = 3799
COA_TIMEOUT = 2.0
COA_TRIES = 2
# RFC 5176 codes
COA_REQUEST, COA_ACK, COA_NAK = 43, 44, 45
DISCONNECT_REQUEST, DISCONNECT_ACK, DISCONNECT_NAK = 40, 41, 42


class RouterUnreachable(Exception):
    """A router did not answer a CoA or Disconnect-Request (the job retries)."""


@dataclass(frozen=True)
class Change:
    """What a live session must be told: a CoA with these attributes, or a Disconnect."""

    kind: str  # CoaAttempt.Kind
    attributes: dict


def desired_change(username: str, *, left_garden: bool = False) -> Change:
    """What the user's rows (as written now) mean for a live session."""
    policy = radius_policy()
    check = dict(RadCheck.objects.filter(username=username).values_list("attribute", "value"))
    groups = set(RadUserGroup.objects.filter(username=username).values_list("groupname", flat=True))
    if not check or check.get("Auth-Type", "").lower() == "reject":
        return Change(CoaAttempt.Kind.DISCONNECT, {})
    if policy.walled_garden_group in groups:
        reply = dict(
            RadGroupReply.objects.filter(groupname=policy.walled_garden_group).values_list("attribute", "value")
        )
        return Change(
            CoaAttempt.Kind.COA,
            {
                "Mikrotik-Address-List": reply.get("Mikrotik-Address-List", policy.walled_garden_address_list),
                "Mikrotik-Rate-Limit": reply.get("Mikrotik-Rate-Limit", policy.walled_garden_rate_limit),
            },
        )
    if left_garden:
        return Change(CoaAttempt.Kind.DISCONNECT, {})
    rate = RadReply.objects.filter(username=username, attribute="Mikrotik-Rate-Limit").values_list("value", flat=True)
    return Change(CoaAttempt.Kind.COA, {"Mikrotik-Rate-Limit": rate.first() or ""})


def change_live_session(username: str, *, left_garden: bool = False) -> list[CoaAttempt]:
    """Tell the routers of every open session of `username` what its rows say now (see the module
    docstring). Returns the attempts recorded; raises `RouterUnreachable` after recording when a
    router did not answer."""
    sessions = list(
        RadAcct.objects.filter(username=username, acctstoptime__isnull=True).values_list(
            "radacctid", "acctsessionid", "nasipaddress", "framedipaddress"
        )
    )
    if not sessions:
        return []
    change = desired_change(username, left_garden=left_garden)
    subscription_id = Subscription.objects.filter(username=username).values_list("pk", flat=True).first()
    registry = list(Nas.objects.values_list("nasname", "secret", "ports"))
    recorded, unreachable = [], []
    for radacct_id, session_id, nas_address, framed_ip in sessions:
        nas = find_nas(registry, nas_address)
        session = {"User-Name": username, "Acct-Session-Id": session_id}
        if framed_ip:
            session["Framed-IP-Address"] = framed_ip
        tried = CoaAttempt.objects.filter(radacct_id=radacct_id, result=CoaAttempt.Result.TIMEOUT).count()
        record = {"subscription_id": subscription_id, "radacct_id": radacct_id, "username": username,
                  "nas_address": nas_address, "attempt": tried + 1}  # fmt: skip
        if nas is None:
            recorded.append(_record(record, change.kind, change.attributes, CoaAttempt.Result.ERROR, None,
                                    "no router registered for this address"))  # fmt: skip
            continue
        secret, port = nas
        result = send(nas_address, port, secret, change.kind, {**session, **change.attributes})
        recorded.append(_record(record, change.kind, change.attributes, *result))
        if change.kind == CoaAttempt.Kind.COA and result[0] == CoaAttempt.Result.NAK:
            result = send(nas_address, port, secret, CoaAttempt.Kind.DISCONNECT, session)
            recorded.append(_record(record, CoaAttempt.Kind.DISCONNECT, {}, *result))
        if result[0] == CoaAttempt.Result.TIMEOUT:
            unreachable.append(nas_address)
    if unreachable:
        raise RouterUnreachable(f"no answer from {', '.join(sorted(set(unreachable)))} for {username}")
    return recorded


def find_nas(registry: list[tuple[str, str, int | None]], address: str) -> tuple[str, int] | None:
    """(secret, CoA port) of the registered router whose address (or network) holds `address`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    for nasname, secret, port in sorted(registry, key=lambda row: "/" in row[0]):  # exact addresses first
        try:
            if ip in ipaddress.ip_network(nasname, strict=False):
                return secret, port or DEFAULT_COA_PORT
        except ValueError:
            continue
    return None


def send(
    address: str, port: int, secret: str, kind: str, attributes: dict, *, timeout: float | None = None,
    tries: int | None = None,
) -> tuple[str, int | None, str]:  # fmt: skip
    """Send one CoA- or Disconnect-Request (with Message-Authenticator); (result, Error-Cause, detail)."""
    from pyrad import packet
    from pyrad.client import Client, Timeout

    client = Client(server=address, coaport=port, secret=secret.encode(), dict=dictionary(),
                    retries=tries or COA_TRIES, timeout=timeout or COA_TIMEOUT)  # fmt: skip
    code = packet.CoARequest if kind == CoaAttempt.Kind.COA else packet.DisconnectRequest
    request = client.CreateCoAPacket(code=code, message_authenticator=True)
    for name, value in attributes.items():
        request[name] = value
    try:
        reply = client.SendPacket(request)
    except Timeout:
        return CoaAttempt.Result.TIMEOUT, None, f"no answer after {client.retries} tries of {client.timeout} s"
    except OSError as exc:
        return CoaAttempt.Result.TIMEOUT, None, f"could not send: {exc}"
    finally:
        client._CloseSocket()
    cause = reply["Error-Cause"][0] if "Error-Cause" in reply else None
    if reply.code in (COA_ACK, DISCONNECT_ACK):
        return CoaAttempt.Result.ACK, cause, ""
    return CoaAttempt.Result.NAK, cause, f"answered with code {reply.code}"


def _record(base: dict, kind: str, attributes: dict, result: str, cause: int | None, detail: str) -> CoaAttempt:
    attempt = CoaAttempt.objects.create(
        **base, kind=kind, attributes=attributes, result=result, error_cause=cause, detail=detail,
        created_at=clock.now(),
    )  # fmt: skip
    if result != CoaAttempt.Result.ACK:
        logger.warning("%s for %s at %s: %s %s", kind, base["username"], base["nas_address"], result, detail)
    return attempt
