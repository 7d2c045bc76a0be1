"""Agent groups: a host is served only by the agents of its group (e.g. the agents in its datacenter).

Host work travels on ``ferry.work.host.<group>.<action>`` (``ferry.infra.subjects``); the agents
of a group share one durable consumer filtered on their group's subjects, so the work queues of
two groups never overlap and any agent of a group may take any of its hosts. This module holds
the pure part: the group grammar and the host actions.
"""

from __future__ import annotations

import re

from ferry.domain.errors import InvalidInput

DEFAULT_GROUP = "default"
GROUP_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,49}$"
HOST_ACTIONS = ("deploy", "rollback")
_GROUP = re.compile(GROUP_PATTERN)


def validate_group(value: object, field: str = "agent_group") -> str:
    """``value`` if it is a group slug (1-50 of a-z, 0-9, '_', '-'), else ``InvalidInput``."""
    if not isinstance(value, str) or not _GROUP.match(value):
        raise InvalidInput(
            f"{field} must be 1-50 lowercase letters, digits, '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value
