"""Agent group per host: only the agents of that group serve it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain add/drop column (no batch mode), as in 0004: existing hosts join the default group.
    op.add_column(
        "hosts", sa.Column("agent_group", sa.String(length=50), server_default="default", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("hosts", "agent_group")
