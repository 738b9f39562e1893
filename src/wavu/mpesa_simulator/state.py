"""The simulator's memory: its configuration, tokens, scripts, registrations and transactions.

Everything lives in one :class:`State` guarded by one lock; request threads and the callback workers
take it for short reads and writes only (never while posting a callback). Nothing is persisted: a
restart forgets every token and transaction, like a fresh sandbox.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from wavu.mpesa_simulator import scenarios

NAIROBI = timezone(timedelta(hours=3), "EAT")  # Kenya has no daylight saving time

# Public Daraja sandbox passkey for shortcode 174379 (published in Safaricom's sandbox test credentials).
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"

_ALNUM = string.ascii_uppercase + string.digits
FIRST_NAMES = ("John", "Wanjiku", "Otieno", "Akinyi", "Kamau", "Njeri", "Mwangi", "Chebet", "Achieng", "Kiprono")


@dataclass
class Config:
    """What the simulator accepts and how it behaves by default. Every field is settable at start-up
    (command-line flags) and later through ``POST /simulator/config``."""

    consumer_key: str = "wavu-sim-consumer-key"
    consumer_secret: str = "wavu-sim-consumer-secret"
    passkey: str = SANDBOX_PASSKEY
    paybill: str = "174379"
    till_store: str = "600100"  # Buy Goods: the store number (BusinessShortCode of an STK push)
    till: str = "600101"  # Buy Goods: the till number (PartyB of an STK push)
    initiator: str = "testapi"
    business_name: str = "Wavu Simulator"
    token_ttl: int = 3599  # seconds; also the `expires_in` string
    callback_timeout: float = 5.0  # seconds to wait for a callback receiver
    validation: bool = True  # post C2B validation requests (Safaricom enables it on request)
    validation_timeout: float = 8.0  # after this, the registered ResponseType decides
    no_callback_pending: float = 60.0  # a "no_callback" STK push stays pending this long, then 1037
    msisdn_form: str = "masked"  # C2B v2 MSISDN: masked ("2547 ***** 149"), hashed (SHA-256 hex) or plain
    strict_urls: bool = True  # refuse C2B URLs with the keywords Safaricom refuses
    max_amount: int = 250_000
    b2c_shortcode: str = "600996"  # the B2C (bulk disbursement) shortcode: PartyA of a B2C payment
    b2c_balance: int = 1_000_000  # shillings in the B2C utility account; a payment above it fails (ResultCode 1)
    default_script: dict[str, Any] = field(default_factory=lambda: dict(scenarios.DEFAULT_SCRIPT))
    phones: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(scenarios.MAGIC_PHONES))

    BOOL_FIELDS = ("validation", "strict_urls")
    NUMBER_FIELDS = ("callback_timeout", "validation_timeout", "no_callback_pending")
    INT_FIELDS = ("token_ttl", "max_amount")
    BALANCE_FIELDS = ("b2c_balance",)
    TEXT_FIELDS = (
        "consumer_key",
        "consumer_secret",
        "passkey",
        "paybill",
        "till_store",
        "till",
        "initiator",
        "business_name",
        "msisdn_form",
        "b2c_shortcode",
    )

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    def update(self, data: Any) -> None:
        """Apply a partial update (the control API). Raises ValueError; nothing changes on refusal."""
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        staged = copy.deepcopy(self)
        for key, value in data.items():
            if key in self.BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif key in self.NUMBER_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be a number ≥ 0")
                value = float(value)
            elif key in self.INT_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{key} must be a whole number ≥ 1")
            elif key in self.BALANCE_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{key} must be a whole number ≥ 0")
            elif key in self.TEXT_FIELDS:
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{key} must be a non-empty string")
                if key == "msisdn_form" and value not in scenarios.MSISDN_FORMS:
                    raise ValueError(f"msisdn_form must be one of {', '.join(scenarios.MSISDN_FORMS)}")
            elif key == "default_script":
                value = scenarios.merge(staged.default_script, scenarios.parse_script(value, where=key))
            elif key == "phones":
                if not isinstance(value, dict):
                    raise ValueError("phones must be an object {msisdn: script}")
                value = {str(k): scenarios.parse_script(v, where=f"phones[{k}]") for k, v in value.items()}
            else:
                raise ValueError(f"unknown setting {key!r}")
            setattr(staged, key, value)
        for key in data:
            setattr(self, key, getattr(staged, key))

    def shortcodes(self) -> set[str]:
        return {self.paybill, self.till_store, self.till}


def nairobi_now() -> datetime:
    return datetime.now(NAIROBI)


def stamp(moment: datetime) -> str:
    """Daraja's yyyyMMddHHmmss, Nairobi time."""
    return moment.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def mask_msisdn(msisdn: str) -> str:
    """``254708374149`` → ``2547 ***** 149`` (the v2 C2B form)."""
    return f"{msisdn[:4]} ***** {msisdn[-3:]}"


def hash_msisdn(msisdn: str) -> str:
    return hashlib.sha256(msisdn.encode()).hexdigest()


def msisdn_as(msisdn: str, form: str) -> str:
    if form == "masked":
        return mask_msisdn(msisdn)
    if form == "hashed":
        return hash_msisdn(msisdn)
    return msisdn


def first_name_for(msisdn: str) -> str:
    return FIRST_NAMES[int(hashlib.sha256(msisdn.encode()).hexdigest(), 16) % len(FIRST_NAMES)]


class State:
    """All mutable simulator state. Public methods take the lock; records are plain dicts returned
    as deep copies, so callers never hold references into the state."""

    def __init__(self, config: Config | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.lock = threading.RLock()
        self.clock = clock
        self.initial_config = copy.deepcopy(config or Config())
        self.config = copy.deepcopy(self.initial_config)
        self.tokens: dict[str, float] = {}  # token -> expiry (clock seconds)
        self._clear()

    def _clear(self) -> None:
        self.transactions: dict[str, dict[str, Any]] = {}  # id -> record (insertion order = history)
        self.receipts: dict[str, str] = {}  # M-Pesa receipt / TransID -> transaction id
        self.registrations: dict[str, dict[str, Any]] = {}  # shortcode -> C2B URLs
        self.next_scripts: list[dict[str, Any]] = []
        self.next_payout_scripts: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.balances: dict[str, int] = {}
        self.sequence = 0

    def reset(self) -> None:
        """Forget transactions, registrations, queued scripts and faults; restore the start-up config.
        Issued tokens stay valid, so a running client is not logged out by a test's reset."""
        with self.lock:
            self._clear()
            self.config = copy.deepcopy(self.initial_config)

    # --- tokens ---------------------------------------------------------------------------------

    def issue_token(self) -> tuple[str, int]:
        token = secrets.token_urlsafe(21)[:28]
        with self.lock:
            ttl = self.config.token_ttl
            self.tokens[token] = self.clock() + ttl
        return token, ttl

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
            if expiry is None:
                return False
            if self.clock() >= expiry:
                del self.tokens[token]
                return False
            return True

    def expire_tokens(self) -> int:
        with self.lock:
            count = len(self.tokens)
            self.tokens.clear()
            return count

    # --- identifiers ----------------------------------------------------------------------------

    def next_sequence(self) -> int:
        with self.lock:
            self.sequence += 1
            return self.sequence

    def new_receipt(self) -> str:
        """A fresh 10-character receipt / TransID such as ``SIM3K2L9QX``."""
        with self.lock:
            while True:
                receipt = "SIM" + "".join(secrets.choice(_ALNUM) for _ in range(7))
                if receipt not in self.receipts:
                    self.receipts[receipt] = ""  # reserved
                    return receipt

    def new_checkout_id(self, msisdn: str) -> str:
        now = nairobi_now()
        return f"ws_CO_{now:%d%m%Y%H%M%S}{self.next_sequence() % 1000:03d}{msisdn[-9:]}"

    @staticmethod
    def new_merchant_id() -> str:
        raw = uuid.uuid4().hex
        return f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:24]}{secrets.randbelow(10**6):06d}"

    @staticmethod
    def new_conversation_ids() -> tuple[str, str]:
        originator = f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9 * 10**7) + 10**7}-1"
        conversation = f"AG_{nairobi_now():%Y%m%d}_{secrets.token_hex(10)}"
        return originator, conversation

    # --- transactions ---------------------------------------------------------------------------

    def add_transaction(self, record: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            record.setdefault("deliveries", [])
            record.setdefault("created_at", nairobi_now().isoformat(timespec="milliseconds"))
            self.transactions[record["id"]] = record
            if record.get("receipt"):
                self.receipts[record["receipt"]] = record["id"]
            return copy.deepcopy(record)

    def update_transaction(self, txn_id: str, **changes: Any) -> dict[str, Any] | None:
        with self.lock:
            record = self.transactions.get(txn_id)
            if record is None:  # forgotten by a reset
                return None
            record.update(changes)
            if record.get("receipt"):
                self.receipts[record["receipt"]] = txn_id
            return copy.deepcopy(record)

    def add_delivery(self, txn_id: str, delivery: dict[str, Any]) -> None:
        with self.lock:
            record = self.transactions.get(txn_id)
            if record is not None:
                record["deliveries"].append(delivery)

    def transaction(self, txn_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.transactions.get(txn_id)
            return copy.deepcopy(record) if record is not None else None

    def by_receipt(self, receipt: str) -> dict[str, Any] | None:
        with self.lock:
            txn_id = self.receipts.get(receipt)
            return self.transaction(txn_id) if txn_id else None

    def list_transactions(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self.transactions.values() if kind is None or r["kind"] == kind]

    def credit(self, shortcode: str, amount: int) -> int:
        """Add a completed payment to the shortcode's utility balance; return the new balance."""
        with self.lock:
            self.balances[shortcode] = self.balances.get(shortcode, 0) + amount
            return self.balances[shortcode]

    # --- scripts --------------------------------------------------------------------------------

    def script_for(self, msisdn: str, header_script: dict[str, Any] | None, *, queued: bool = True) -> dict[str, Any]:
        """The effective script: defaults < per-phone < next queued (STK only) < per-request header."""
        with self.lock:
            queued = self.next_scripts.pop(0) if queued and self.next_scripts else None
            return scenarios.merge(self.config.default_script, self.config.phones.get(msisdn), queued, header_script)

    def payout_script(self, header_script: dict[str, Any] | None) -> dict[str, Any]:
        """The script of a B2C payment or reversal: the default delays and copies with outcome
        "success" < the next queued payout script < the per-request header."""
        with self.lock:
            queued = self.next_payout_scripts.pop(0) if self.next_payout_scripts else None
            base = {k: v for k, v in self.config.default_script.items() if k != "outcome"}
            return scenarios.merge(base, {"outcome": "success"}, queued, header_script)

    def take_b2c_funds(self, amount: int) -> int | None:
        """Debit the B2C utility account; the new balance, or None (nothing taken) when it is too low."""
        with self.lock:
            if amount > self.config.b2c_balance:
                return None
            self.config.b2c_balance -= amount
            return self.config.b2c_balance

    def take_fault(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                if fault["path"] in (path, "*"):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.faults.remove(fault)
                    return dict(fault)
            return None
