"""Shop prices as shown on a page -> (amount, currency), and conversion to USD from a fixed rates table.

Shops write prices many ways: `$1,299.00`, `₹ 2,499`, `Rs. 999`, `EUR 13,97`, `₹ 999 – ₹ 1,499`, or not at all.
Pages decoded with the wrong charset turn `₹` into `â‚¹` (STACK.md trap 9), so that is repaired first.
Conversion never calls a live FX service: rates come from configuration (`usd_rates` in crawl/sites.yaml).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Longest tokens first, so "US$" wins over "$" and "Rs." over "Rs".
_CURRENCY_TOKENS: tuple[tuple[str, str], ...] = (
    ("US$", "USD"),
    ("USD", "USD"),
    ("INR", "INR"),
    ("Rs.", "INR"),
    ("Rs", "INR"),
    ("₹", "INR"),
    ("EUR", "EUR"),
    ("€", "EUR"),
    ("GBP", "GBP"),
    ("£", "GBP"),
    ("$", "USD"),
)
_NUMBER = re.compile(r"\d[\d.,\u00a0\u202f]*\d|\d")
_RANGE_SEPARATOR = re.compile(r"\d\s*(?:-|–|—|to)\s*(?:[^\d\s]{0,4}\s*)\d")


class PriceError(ValueError):
    """A price that cannot be converted (for instance a currency missing from the rates table)."""


@dataclass(frozen=True)
class Price:
    """A parsed price. `amount` is None when none was shown; `note` then says why (or flags a range)."""

    amount: float | None
    currency: str | None
    note: str | None = None


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text decoded as windows-1252 (`â‚¹ 2,499` -> `₹ 2,499`); other text is returned as is."""
    if "â" not in text and "Â" not in text:
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except UnicodeError:
        return text.replace("Â", "")


def detect_currency(text: str) -> str | None:
    for token, code in _CURRENCY_TOKENS:
        if token.isalpha() or token.endswith("."):
            # Letter codes must stand alone: "Rs" in "Trousers" is not rupees.
            if re.search(rf"(?<![A-Za-z]){re.escape(token)}(?![A-Za-z])", text):
                return code
        elif token in text:
            return code
    return None


def parse_number(raw: str) -> float:
    """`1,299.00` -> 1299.0, `1.299,00` -> 1299.0, `13,97` -> 13.97, `1,00,000` -> 100000.0 (Indian grouping)."""
    digits = re.sub(r"[\s\u00a0\u202f]", "", raw)
    if "," in digits and "." in digits:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        return float(digits.replace(thousands, "").replace(decimal, "."))
    for separator in (",", "."):
        if separator in digits:
            parts = digits.split(separator)
            # One separator followed by exactly 3 digits groups thousands; otherwise it marks decimals.
            if len(parts) > 2 or len(parts[-1]) == 3:
                return float(digits.replace(separator, ""))
            return float(digits.replace(separator, "."))
    return float(digits)


def parse_price(text: str | None, default_currency: str | None = None) -> Price:
    """Parse a displayed price; a range gives its lower bound (the "from" price) with a note."""
    if text is None or not text.strip():
        return Price(None, None, "no price shown")
    text = repair_mojibake(" ".join(text.split()))
    numbers = _NUMBER.findall(text)
    if not numbers:
        return Price(None, None, f"no amount in {text!r}")
    currency = detect_currency(text) or default_currency
    amounts = [parse_number(n) for n in numbers]
    note = None
    if len(amounts) > 1 and _RANGE_SEPARATOR.search(text):
        note = f"range {min(amounts):g}-{max(amounts):g}"
        amount = min(amounts)
    else:
        amount = amounts[0]
    if currency is None:
        return Price(amount, None, f"unknown currency in {text!r}")
    return Price(amount, currency, note)


def to_usd(amount: float, currency: str, usd_rates: Mapping[str, float]) -> float:
    """Convert with `usd_rates` (US dollars per unit of each currency), rounded to cents."""
    try:
        rate = usd_rates[currency]
    except KeyError:
        known = ", ".join(sorted(usd_rates))
        raise PriceError(f"no USD rate for {currency}: add it to usd_rates (known: {known})") from None
    return round(amount * float(rate), 2)


def format_price(amount: float, currency: str, style: int = 0) -> str:
    """Write a price the way shops do; `style` picks among the usual spellings of each currency."""
    if currency == "USD":
        return f"${amount:,.2f}"
    if currency == "INR":
        rupees = f"{amount:,.0f}"
        return (f"₹ {rupees}", f"Rs. {rupees}", f"₹{amount:,.2f}", f"INR {rupees}")[style % 4]
    if currency == "EUR":
        return f"{amount:,.2f} €".replace(",", "\u202f").replace(".", ",")
    return f"{currency} {amount:,.2f}"
