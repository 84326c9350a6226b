"""Prices as shops print them -> amount and currency, and the fixed-rate conversion to USD."""

from __future__ import annotations

import pytest

from fashion_pipeline.lib.catalog.prices import PriceError, format_price, parse_price, to_usd
from fashion_pipeline.lib.catalog.sites import load_usd_rates


@pytest.mark.parametrize(
    ("text", "default", "amount", "currency"),
    [
        ("$1,299.00", None, 1299.0, "USD"),
        ("$49", None, 49.0, "USD"),
        ("US$ 12.50", None, 12.5, "USD"),
        ("₹ 2,499", None, 2499.0, "INR"),
        ("₹270", None, 270.0, "INR"),
        ("₹2,499.00", None, 2499.0, "INR"),
        ("Rs. 999", None, 999.0, "INR"),
        ("Rs.1,00,000", None, 100000.0, "INR"),  # Indian digit grouping
        ("INR 1,499", None, 1499.0, "INR"),
        ("EUR 13,97", None, 13.97, "EUR"),  # decimal comma
        ("1.299,00 €", None, 1299.0, "EUR"),
        ("£20", None, 20.0, "GBP"),
        ("270", "INR", 270.0, "INR"),  # Amazon's a-price-whole: no symbol, the site's currency applies
        ("â‚¹ 2,499", None, 2499.0, "INR"),  # UTF-8 read as windows-1252 (a page without <meta charset>)
    ],
)
def test_prices_in_every_spelling_parse_to_amount_and_currency(text, default, amount, currency):
    price = parse_price(text, default)
    assert (price.amount, price.currency, price.note) == (amount, currency, None)


def test_a_range_gives_its_lower_bound_and_says_so():
    price = parse_price("₹ 999 – ₹ 1,499")
    assert (price.amount, price.currency) == (999.0, "INR")
    assert price.note == "range 999-1499"
    assert parse_price("$10 - $20").amount == 10.0


@pytest.mark.parametrize("text", [None, "", "   "])
def test_a_missing_price_is_none_with_a_reason(text):
    price = parse_price(text, "USD")
    assert (price.amount, price.currency, price.note) == (None, None, "no price shown")


def test_text_without_digits_or_currency_is_explained():
    assert parse_price("Currently unavailable", "USD").note == "no amount in 'Currently unavailable'"
    unknown = parse_price("12.99")  # no symbol and no site currency
    assert (unknown.amount, unknown.currency) == (12.99, None)
    assert "unknown currency" in unknown.note


def test_currency_codes_count_only_as_whole_words():
    assert parse_price("Rs 999").currency == "INR"
    assert parse_price("HRs 999", "USD").currency == "USD"  # "Rs" inside a word is not rupees


def test_conversion_uses_the_configured_table():
    rates = load_usd_rates()
    assert rates["USD"] == 1.0
    assert to_usd(2499.0, "INR", {"USD": 1.0, "INR": 0.012}) == 29.99
    assert to_usd(10.0, "EUR", rates) == round(10 * rates["EUR"], 2)
    with pytest.raises(PriceError, match="no USD rate for CHF"):
        to_usd(10.0, "CHF", rates)


@pytest.mark.parametrize("style", range(4))
def test_formatted_prices_parse_back(style):
    for amount in (49.0, 1299.0, 24999.0):
        assert parse_price(format_price(amount, "USD", style)).amount == amount
        assert parse_price(format_price(amount, "INR", style)).amount == amount
    assert format_price(1299.0, "USD") == "$1,299.00"
    assert format_price(2499.0, "INR", 0) == "₹ 2,499"
    assert format_price(999.0, "INR", 1) == "Rs. 999"
