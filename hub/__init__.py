"""The hub's composition root: configuration, data layer, command line, server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dispatch-hub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
