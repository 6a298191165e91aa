"""posmon-agent: sources, spool, uplink, local API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("posmon")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
