"""The fleet simulator: a simulated fleet of agents posting through the real ingest API."""
