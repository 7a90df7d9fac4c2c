"""Billing: the European Central Bank's reference rates, by which SMS priced in another
currency are converted into the billing currency (see README.md)."""
