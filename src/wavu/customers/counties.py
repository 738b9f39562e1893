"""The 47 counties of Kenya (Constitution of Kenya 2010, First Schedule), in the schedule's order.

Customers' county is stored in the canonical spelling below so that reports and filters group
"nairobi", "Nairobi City County" and "NAIROBI" together.
"""

import re

COUNTIES = (
    "Mombasa",
    "Kwale",
    "Kilifi",
    "Tana River",
    "Lamu",
    "Taita-Taveta",
    "Garissa",
    "Wajir",
    "Mandera",
    "Marsabit",
    "Isiolo",
    "Meru",
    "Tharaka-Nithi",
    "Embu",
    "Kitui",
    "Machakos",
    "Makueni",
    "Nyandarua",
    "Nyeri",
    "Kirinyaga",
    "Murang'a",
    "Kiambu",
    "Turkana",
    "West Pokot",
    "Samburu",
    "Trans-Nzoia",
    "Uasin Gishu",
    "Elgeyo-Marakwet",
    "Nandi",
    "Baringo",
    "Laikipia",
    "Nakuru",
    "Narok",
    "Kajiado",
    "Kericho",
    "Bomet",
    "Kakamega",
    "Vihiga",
    "Bungoma",
    "Busia",
    "Siaya",
    "Kisumu",
    "Homa Bay",
    "Migori",
    "Kisii",
    "Nyamira",
    "Nairobi",
)


def _key(text: str) -> str:
    letters = re.sub(r"[^a-z]", "", text.lower())
    for suffix in ("citycounty", "county", "city"):
        if letters.endswith(suffix) and len(letters) > len(suffix):
            letters = letters[: -len(suffix)]
            break
    return letters


_BY_KEY = {_key(name): name for name in COUNTIES}


def canonical_county(text: str) -> str | None:
    """The canonical name of the county typed in `text` (any case, spacing, dashes, "County"
    suffix), or None when it names no Kenyan county. Blank input gives ""."""
    if not (text or "").strip():
        return ""
    return _BY_KEY.get(_key(text))
