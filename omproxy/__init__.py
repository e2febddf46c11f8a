"""omproxy: a recording/replay reverse proxy for Genesys Mobile Services Open Media traffic."""

__version__ = "0.1.0"
