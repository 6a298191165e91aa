"""Payments in: the POS application's reports (local API, log files), timeouts, in doubt."""
