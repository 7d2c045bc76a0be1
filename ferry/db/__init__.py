"""ferry's SQL database: configuration tables and the release read model."""

from ferry.db.engine import make_engine, session_factory, upgrade
from ferry.db.models import Base

__all__ = ["Base", "make_engine", "session_factory", "upgrade"]
