"""Network probes: one module per probe type (see base.py for the contract)."""
