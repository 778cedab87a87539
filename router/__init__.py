"""deploy-router: a reverse proxy that ships new ML models safely."""

__version__ = "0.1.0"
