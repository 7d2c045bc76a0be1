"""The error every backup and restore step raises for what a user can fix."""

from __future__ import annotations

from ferry.domain.errors import FerryError


class BackupError(FerryError):
    pass
