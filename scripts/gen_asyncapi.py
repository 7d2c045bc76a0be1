"""Write docs/asyncapi.yaml: the NATS event subjects and the notifier's WebSocket channels.

Event payload schemas come from the pydantic models in ferry/domain/events.py, so the document never
drifts from the code. ``python scripts/gen_asyncapi.py --check`` fails when the file is stale.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from ferry.domain.events import EVENT_TYPES, AnyEvent

OUT = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
REF = "#/components/schemas/{model}"


def _frame_schemas() -> dict[str, Any]:
    seq = {"type": "integer", "minimum": 0, "description": "stream sequence (FERRY_EVENTS)"}
    return {
        "EventFrame": {
            "type": "object",
            "required": ["kind", "seq", "event"],
            "properties": {
                "kind": {"const": "event"},
                "seq": seq,
                "event": {"$ref": "#/components/schemas/Event"},
            },
        },
        "HeartbeatFrame": {
            "type": "object",
            "required": ["kind", "seq", "ts"],
            "description": "sent when nothing else was sent for the heartbeat interval (15 s by default)",
            "properties": {
                "kind": {"const": "heartbeat"},
                "seq": {**seq, "description": "the last sequence sent to this client"},
                "ts": {"type": "number", "description": "server time, Unix seconds"},
            },
        },
        "ResyncFrame": {
            "type": "object",
            "required": ["kind", "since", "reason"],
            "description": (
                "the client fell behind (its bounded queue overflowed); the server closes with 4429 "
                "and the client reconnects with ?since=<its last seq> (at least this since)"
            ),
            "properties": {"kind": {"const": "resync"}, "since": seq, "reason": {"type": "string"}},
        },
        "SinceMessage": {
            "type": "object",
            "description": "optional first client message when the URL has no ?since= (else live only)",
            "properties": {"since": seq},
        },
    }


def document() -> dict[str, Any]:
    schema = TypeAdapter(AnyEvent).json_schema(ref_template=REF)
    schemas: dict[str, Any] = dict(schema.pop("$defs"))
    schemas["Event"] = schema  # the discriminated union on "type"
    schemas.update(_frame_schemas())
    event_messages = {
        t.__name__: {
            "name": t.model_fields["type"].default,
            "title": t.__name__,
            "summary": (t.__doc__ or "").strip().splitlines()[0]
            if t.__doc__
            else t.model_fields["type"].default,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Ferry-Type": {"const": t.model_fields["type"].default},
                    "Ferry-Version": {"type": "string", "description": "the event's per-release version"},
                    "Nats-Msg-Id": {"type": "string"},
                    "Nats-Expected-Last-Subject-Sequence": {"type": "string"},
                },
            },
            "payload": {"$ref": f"#/components/schemas/{t.__name__}"},
        }
        for t in EVENT_TYPES
    }
    frames = {
        name: {
            "name": name,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        for name in ("EventFrame", "HeartbeatFrame", "ResyncFrame", "SinceMessage")
    }
    ws_query = {
        "ws": {
            "query": {
                "type": "object",
                "properties": {
                    "since": {"type": "integer", "minimum": 0, "description": "last stream sequence seen"},
                    "token": {
                        "type": "string",
                        "description": "required when FERRY_WS_TOKEN is set (else 4401)",
                    },
                },
            }
        }
    }
    frame_refs = {name: {"$ref": f"#/components/messages/{name}"} for name in frames}

    def ws_channel(address: str, description: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "address": address,
            "description": description,
            "servers": [{"$ref": "#/servers/notifier"}],
            "parameters": params,
            "messages": frame_refs,
            "bindings": ws_query,
        }

    release_param = {"releaseId": {"description": "release id: 1-64 of [A-Za-z0-9_-]"}}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ferry release events",
            "version": "1.0.0",
            "description": (
                "Every release is an append-only history on its own NATS JetStream subject "
                "(stream FERRY_EVENTS). The notifier pushes the same events over WebSockets, resuming "
                "from the last stream sequence a client saw: every later matching event exactly once, "
                "in stream order, then live ones. "
                "Generated by scripts/gen_asyncapi.py from ferry/domain/events.py."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "JetStream, stream FERRY_EVENTS",
            },
            "notifier": {
                "host": "127.0.0.1:8001",
                "protocol": "ws",
                "description": (
                    "the notifier (FERRY_WS_PORT); close codes 4400 bad request, "
                    "4401 unauthorized, 4429 resync"
                ),
            },
        },
        "channels": {
            "releaseEvents": {
                "address": "ferry.release.{releaseId}.release",
                "description": (
                    "a release's release-level events (requested, approval, build, pause, the end); "
                    "read a whole release as ferry.release.{releaseId}.> in stream order. Appends use "
                    "Nats-Expected-Last-Subject-Sequence with "
                    "Nats-Expected-Last-Subject-Sequence-Subject: ferry.release.{releaseId}.>. "
                    "Releases recorded before this layout are on ferry.release.{releaseId}."
                ),
                "servers": [{"$ref": "#/servers/nats"}],
                "parameters": release_param,
                "messages": {
                    name: {"$ref": f"#/components/messages/{name}"}
                    for name in event_messages
                    if not name.startswith("Host")
                },
            },
            "hostEvents": {
                "address": "ferry.release.{releaseId}.host.{host}",
                "description": (
                    "one host's events in a release, numbered on this subject (version); a host "
                    "name's dots are written as ~. A host's first step and its switch are appended "
                    "guarded by the whole release, its other events by this subject only"
                ),
                "servers": [{"$ref": "#/servers/nats"}],
                "parameters": {
                    **release_param,
                    "host": {"description": "the host's name with '.' written as '~'"},
                },
                "messages": {
                    name: {"$ref": f"#/components/messages/{name}"}
                    for name in event_messages
                    if name.startswith("Host")
                },
            },
            "wsRelease": ws_channel("/ws/releases/{releaseId}", "one release's events", release_param),
            "wsProject": ws_channel(
                "/ws/projects/{project}",
                "every release of a project (by its ReleaseRequested's project)",
                {"project": {"description": "project slug"}},
            ),
            "wsAll": ws_channel("/ws/all", "every release the client may see", {}),
        },
        "operations": {
            "appendReleaseEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/releaseEvents"},
                "summary": "services append events (gateway, orchestrator, builder, agents)",
            },
            "appendHostEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/hostEvents"},
                "summary": "agents append a host's step events",
            },
            "followReleaseEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/releaseEvents"},
                "summary": "projector, orchestrator and notifier follow ferry.release.>",
            },
            "followHostEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/hostEvents"},
                "summary": "projector, orchestrator and notifier follow ferry.release.>",
            },
            **{
                f"push{name[2:]}": {
                    "action": "send",
                    "channel": {"$ref": f"#/channels/{name}"},
                    "summary": "the notifier pushes frames",
                    "messages": [
                        {"$ref": f"#/channels/{name}/messages/{m}"}
                        for m in ("EventFrame", "HeartbeatFrame", "ResyncFrame")
                    ],
                }
                for name in ("wsRelease", "wsProject", "wsAll")
            },
            **{
                f"since{name[2:]}": {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/{name}"},
                    "summary": "the notifier reads an optional first {since: N}",
                    "messages": [{"$ref": f"#/channels/{name}/messages/SinceMessage"}],
                }
                for name in ("wsRelease", "wsProject", "wsAll")
            },
        },
        "components": {"schemas": schemas, "messages": {**event_messages, **frames}},
    }


_PLAIN_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]*$")


def _key(k: str) -> str:
    return k if _PLAIN_KEY.match(k) else json.dumps(k)


def _scalar(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)  # JSON scalars are YAML flow scalars


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML for JSON-like data (strings always double-quoted)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{_key(k)}:")
                lines.extend(to_yaml(v, indent + 1))
            else:
                lines.append(
                    f"{pad}{_key(k)}: {_scalar(v) if not isinstance(v, dict | list) else json.dumps(v)}"
                )
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict | list) and v:
                sub = to_yaml(v, indent + 1)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_scalar(v) if not isinstance(v, dict | list) else json.dumps(v)}")
    else:
        lines.append(pad + _scalar(value))
    return lines


def render() -> str:
    header = "# Generated by scripts/gen_asyncapi.py from ferry/domain/events.py; do not edit by hand.\n"
    return header + "\n".join(to_yaml(document())) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/gen_asyncapi.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
