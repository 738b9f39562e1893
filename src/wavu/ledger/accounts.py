"""The chart of accounts, by code. Created by migration; services refer to accounts by these codes."""

from wavu.core.tax import TaxClass

CASH = "1010"
BANK = "1020"
MPESA_CLEARING = "1030"
AIRTEL_CLEARING = "1040"
CARD_CLEARING = "1050"
ACCOUNTS_RECEIVABLE = "1100"
VAT_PAYABLE = "2100"
EXCISE_PAYABLE = "2110"
CUSTOMER_CREDIT = "2200"
SUSPENSE = "2300"
REVENUE_INTERNET = "4000"
REVENUE_STANDARD = "4010"
REVENUE_ZERO_RATED = "4020"
REVENUE_EXEMPT = "4030"

REVENUE_BY_TAX_CLASS = {
    TaxClass.INTERNET: REVENUE_INTERNET,
    TaxClass.STANDARD: REVENUE_STANDARD,
    TaxClass.ZERO_RATED: REVENUE_ZERO_RATED,
    TaxClass.EXEMPT: REVENUE_EXEMPT,
}

# (code, name, type, customer sub-ledger)
CHART = [
    (CASH, "Cash on hand", "asset", False),
    (BANK, "Bank", "asset", False),
    (MPESA_CLEARING, "M-Pesa clearing", "asset", False),
    (AIRTEL_CLEARING, "Airtel Money clearing", "asset", False),
    (CARD_CLEARING, "Card clearing", "asset", False),
    (ACCOUNTS_RECEIVABLE, "Accounts receivable", "asset", True),
    (VAT_PAYABLE, "VAT payable", "liability", False),
    (EXCISE_PAYABLE, "Excise duty payable", "liability", False),
    (CUSTOMER_CREDIT, "Customer credit (unapplied payments)", "liability", True),
    (SUSPENSE, "Unmatched payments (suspense)", "liability", False),
    (REVENUE_INTERNET, "Revenue: internet services", "revenue", False),
    (REVENUE_STANDARD, "Revenue: equipment, installation and other standard-rated", "revenue", False),
    (REVENUE_ZERO_RATED, "Revenue: zero-rated", "revenue", False),
    (REVENUE_EXEMPT, "Revenue: exempt", "revenue", False),
]
