"""Write services/gateway/static/ferry_model.json: the words of the release model the portal's
reducer (``release_state.js``) needs, taken from the Python models so the two never drift.

Host steps, release/host/build statuses, the terminal statuses, the event types (and which end a
release, which are about one host) and the rollout strategies come from ``ferry.domain``.
``python scripts/gen_model_json.py --check`` fails when the file is stale (``make lint``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ferry.domain.events import EVENT_TYPES, HOST_EVENT_TYPES, HOST_STEPS, Event
from ferry.domain.release import HOST_STATUSES, STATUSES, TERMINAL
from ferry.domain.views import BUILD_VIEW_STATUSES
from ferry.domain.vocabulary import STRATEGIES

OUT = Path(__file__).resolve().parents[1] / "services" / "gateway" / "static" / "ferry_model.json"


def _type(event: type[Event]) -> str:
    return str(event.model_fields["type"].default)


def model() -> dict[str, Any]:
    return {
        "generated": "by scripts/gen_model_json.py from ferry/domain; do not edit by hand",
        "host_steps": list(HOST_STEPS),
        "statuses": list(STATUSES),
        "terminal_statuses": [s for s in STATUSES if s in TERMINAL],
        "host_statuses": list(HOST_STATUSES),
        "build_statuses": list(BUILD_VIEW_STATUSES),
        "strategies": list(STRATEGIES),
        "event_types": [_type(t) for t in EVENT_TYPES],
        "terminal_event_types": [_type(t) for t in EVENT_TYPES if t.TERMINAL],
        "host_event_types": [_type(t) for t in HOST_EVENT_TYPES],
    }


def render() -> str:
    return json.dumps(model(), indent=2) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/gen_model_json.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
