"""Hosts of a rollback that switched instantly to a release directory they held

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("release_hosts", sa.Column("release_dir", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("release_hosts", "release_dir")
