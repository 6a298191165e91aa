"""Peripherals over serial (and NUT): one driver module per protocol."""
