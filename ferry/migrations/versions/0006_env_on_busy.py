"""What a release request does while another release holds its environment

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # existing environments queue new releases behind the running one
    op.add_column(
        "environments", sa.Column("on_busy", sa.String(length=10), server_default="queue", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("environments", "on_busy")
