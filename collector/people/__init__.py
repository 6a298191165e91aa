"""``posmon``, the people's CLI: the collector's query API for central IT and technicians.

- :mod:`.client` — HTTP (standard library), pagination, errors with exit codes
- :mod:`.when` — "30m", "2h", "1d", "1w" or ISO 8601 into the API's ISO times
- :mod:`.tables` — plain-text aligned tables, cells clipped with "…"
- :mod:`.views` — what each command prints on a terminal
- :mod:`.commands` — the argument parser and the commands

The entry point is :func:`collector.people_cli.main`.
"""
