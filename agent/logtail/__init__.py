"""Log tailing for POS applications that cannot call the local API."""
