"""NATS identities: who may publish and subscribe to what, and their credentials.

Every ferry service connects as its own user (``gateway``, ``builder``, ``agent``, ``notifier``),
a chat-ops bot as ``chatops`` (subscribe to ``ferry.release.>``, nothing else), operators and
the test suite as ``admin``. The permissions below are the whole list of subjects each service
uses, JetStream API included (``$JS.API.*``, ``$JS.ACK.*``, ``$O.*``, ``$KV.*``): granted by
stream and consumer name, so an agent can append only to a host's subject
(``ferry.release.*.host.>``), never to a release's (``release.requested``), cannot change or
purge a stream, and can bind only the work consumers of agents.

A credential is a JSON file ``{"user": ..., "password": ...}`` (mode 0600). The server holds
bcrypt hashes only (``authorization_block``). Each identity's inbox is ``_INBOX.<identity>``,
so no identity can read another one's replies.

``python -m ferry.infra.natsauth DIR`` writes a credential per identity and ``DIR/auth.conf`` (the
``authorization`` block to ``include`` from a production nats-server config).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import bcrypt

from ferry.domain.events import HOST_EVENT_TYPES, TYPE_NAMES
from ferry.infra import subjects as S

EVENTS = S.EVENTS_STREAM
WORK = S.WORK_STREAM
OBJECTS = S.object_stream(S.ARTIFACTS_BUCKET)
OBJECT_SUBJECTS = S.object_subjects(S.ARTIFACTS_BUCKET)
BUILDS_KV = S.kv_stream(S.BUILDS_BUCKET)
BUILDS_SUBJECTS = S.kv_subjects(S.BUILDS_BUCKET)
LOCKS_KV = S.kv_stream(S.LOCKS_BUCKET)
LOCKS_SUBJECTS = S.kv_subjects(S.LOCKS_BUCKET)
OPEN_KV = S.kv_stream(S.OPEN_RELEASES_BUCKET)
OPEN_SUBJECTS = S.kv_subjects(S.OPEN_RELEASES_BUCKET)
HOST_LEVEL = f"{S.RELEASE_PREFIX}.*.host.>"
ALL_DOCTOR = f"{S.DOCTOR_PREFIX}.>"
BCRYPT_ROUNDS = 8
"""Passwords are 256 random bits: the work factor protects nothing here, while the server pays it
on every connect."""


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responds: bool = False
    """May answer requests it received (health checks, refs) on their reply subject."""
    deny: tuple[str, ...] = ()
    """Carved out of ``publish`` (a wildcard token cannot say "names starting with agent-")."""

    def as_conf(self) -> dict[str, object]:
        pub: dict[str, object] = {"allow": list(self.publish)} if self.publish else {"deny": [">"]}
        if self.deny:
            pub["deny"] = list(self.deny)
        conf: dict[str, object] = {"publish": pub, "subscribe": {"allow": list(self.subscribe)}}
        if self.responds:
            conf["allow_responses"] = True
        return conf


def _info(*streams: str) -> list[str]:
    return [f"$JS.API.STREAM.INFO.{s}" for s in streams]


def _manage(*streams: str) -> list[str]:
    return [f"$JS.API.STREAM.{op}.{s}" for s in streams for op in ("CREATE", "UPDATE", "INFO")]


def _read(stream: str) -> list[str]:
    """Direct and stored-message gets (no consumer)."""
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _ordered(stream: str) -> list[str]:
    """Ephemeral ordered consumers (a live follow, an object download) with flow control."""
    return [
        "$JS.API.STREAM.NAMES",  # nats-py looks the stream up by subject first
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.*.>",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _durable(stream: str, name: str) -> list[str]:
    """One named durable pull consumer: create, bind, fetch, ack."""
    return [
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{name}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.{name}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
    ]


OTHER_WORK_CONSUMERS = ("builder", "orchestrator-timer", "webhook-delivery")
"""The work consumers that are not agents' (agents may bind any other name: agent-<group>)."""


def _inbox(identity: str) -> str:
    return f"_INBOX.{identity}.>"


PERMISSIONS: dict[str, Permissions] = {
    "gateway": Permissions(  # API, projector, orchestrator: requests releases and schedules work
        publish=(
            S.RELEASE_LEVEL,
            S.BUILD_WORK,
            S.TIMER_WORK,
            S.ANY_HOST_WORK,
            S.BUILDER_REFS,
            ALL_DOCTOR,  # drift checks: an agent of the hosts' group reads `current`
            S.health(">"),
            "$JS.API.INFO",
            *_manage(EVENTS, WORK, OBJECTS),
            *_read(EVENTS),
            "$JS.API.CONSUMER.*.FERRY_EVENTS",
            "$JS.API.CONSUMER.*.FERRY_EVENTS.>",
            "$JS.API.CONSUMER.*.*.FERRY_EVENTS.>",
            f"$JS.ACK.{EVENTS}.>",
            f"$JS.FC.{EVENTS}.>",
            *_durable(WORK, "orchestrator-timer"),
            *_read(OBJECTS),
            *_ordered(OBJECTS),
            # garbage collection (ferry.infra.gc): an object's delete marker, then its chunks purged
            "$O.ferry-artifacts.M.>",
            f"$JS.API.STREAM.PURGE.{OBJECTS}",
            # history retention (ferry.infra.retention): a release's subjects, once archived
            f"$JS.API.STREAM.PURGE.{EVENTS}",
            *_manage(LOCKS_KV),
            *_read(LOCKS_KV),
            *_ordered(LOCKS_KV),
            LOCKS_SUBJECTS,
            *_manage(OPEN_KV),  # the index of unfinished releases the reconciler walks
            *_read(OPEN_KV),
            f"$JS.API.STREAM.PURGE.{OPEN_KV}",
            OPEN_SUBJECTS,
        ),
        subscribe=(_inbox("gateway"),),
    ),
    "builder": Permissions(  # build work -> build.* events on the release's subject, artifacts
        publish=(
            S.RELEASE_LEVEL,
            "$JS.API.INFO",
            *_info(EVENTS, WORK),
            *_read(EVENTS),
            *_durable(WORK, "builder"),
            *_read(OBJECTS),
            *_ordered(OBJECTS),
            OBJECT_SUBJECTS,
            f"$JS.API.STREAM.CREATE.{BUILDS_KV}",
            *_read(BUILDS_KV),
            BUILDS_SUBJECTS,
            *_read(LOCKS_KV),  # fenced work: is the release still the environment's holder?
        ),
        subscribe=(_inbox("builder"), S.health("builder"), S.BUILDER_REFS),
        responds=True,
    ),
    "agent": Permissions(  # host work -> host.* events on the host's subject, step logs
        publish=(
            HOST_LEVEL,
            "$JS.API.INFO",
            *_info(EVENTS, WORK),
            *_read(EVENTS),
            *_durable(WORK, "*"),  # agent-<group>; the other services' consumers are denied below
            f"$JS.API.CONSUMER.DELETE.{WORK}.agent",  # the consumer agents shared before groups
            *_read(OBJECTS),
            *_ordered(OBJECTS),
            OBJECT_SUBJECTS,
            *_read(LOCKS_KV),  # fenced work: is the release still the environment's holder?
        ),
        subscribe=(_inbox("agent"), S.health("agent"), ALL_DOCTOR),
        responds=True,
        deny=tuple(d for name in OTHER_WORK_CONSUMERS for d in _durable(WORK, name)),
    ),
    "notifier": Permissions(  # follows events (WebSocket), routes and delivers webhooks
        publish=(
            S.WEBHOOK_WORK,
            "$JS.API.INFO",
            *_info(WORK, OBJECTS),
            *_read(EVENTS),
            *_ordered(EVENTS),
            *_durable(EVENTS, "webhooks"),
            *_durable(WORK, "webhook-delivery"),
        ),
        subscribe=(_inbox("notifier"),),
    ),
    "chatops": Permissions(publish=(), subscribe=(S.ALL_EVENTS,)),
    "admin": Permissions(publish=(">",), subscribe=(">",), responds=True),
}
IDENTITIES: tuple[str, ...] = tuple(PERMISSIONS)
SERVICE_IDENTITY = {"gateway": "gateway", "builder": "builder", "agent": "agent", "notifier": "notifier"}


_HOST_TYPES = frozenset(t.model_fields["type"].default for t in HOST_EVENT_TYPES)
_BUILD_TYPES = frozenset(t for t in TYPE_NAMES if t.startswith("build."))


def event_types(identity: str) -> frozenset[str] | None:
    """The event types ``identity`` may append (None: any), checked by the event store."""
    match identity:
        case "admin":
            return None
        case "agent":
            return _HOST_TYPES
        case "builder":
            return _BUILD_TYPES
        case "gateway":
            return TYPE_NAMES - _HOST_TYPES - _BUILD_TYPES
        case _:
            return frozenset()


@dataclass(frozen=True)
class Credential:
    user: str
    password: str = field(repr=False)

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX.{self.user}"

    def to_json(self) -> str:
        return json.dumps({"user": self.user, "password": self.password}) + "\n"

    @classmethod
    def read(cls, path: Path) -> Credential:
        try:
            data = json.loads(Path(path).read_text())
            return cls(str(data["user"]), str(data["password"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"cannot read NATS credentials from {path}: {exc}") from None


def credential_path(directory: Path, identity: str) -> Path:
    return Path(directory) / f"{identity}.json"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner may read (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_credentials(directory: Path) -> dict[str, Credential]:
    """Every identity's credential in ``directory``, generating the missing ones (0600, dir 0700)."""
    private_dir(Path(directory))
    found: dict[str, Credential] = {}
    for identity in IDENTITIES:
        path = credential_path(directory, identity)
        if not path.exists():
            write_private(path, Credential(identity, secrets.token_urlsafe(32)).to_json())
        found[identity] = Credential.read(path)
    return found


def authorization_block(credentials: dict[str, Credential]) -> str:
    """The server's ``authorization`` block: bcrypt hashes and each identity's permissions."""
    users = []
    for identity, cred in credentials.items():
        hashed = bcrypt.hashpw(cred.password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS, prefix=b"2a"))
        users.append(
            {"user": identity, "password": hashed.decode(), "permissions": PERMISSIONS[identity].as_conf()}
        )
    # nats-server reads JSON; quoted strings keep "$JS..." and bcrypt's "$2a$" literal.
    return "authorization: " + json.dumps({"users": users}, indent=2) + "\n"


def url_with(url: str, cred: Credential) -> str:
    """``url`` (one server) carrying ``cred`` as userinfo."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{cred.user}:{cred.password}@{host}"))


def without_userinfo(url: str) -> str:
    """``url`` (comma-separated servers) with any credentials removed: safe to log or pass on."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        out.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])))
    return ",".join(out)


def from_url(url: str) -> Credential | None:
    """The credential carried by the first server URL's userinfo, if any."""
    parts = urlsplit(url.split(",")[0].strip())
    if parts.username and parts.password:
        return Credential(unquote(parts.username), unquote(parts.password))
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ferry.infra.natsauth DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    creds = ensure_credentials(directory)
    write_private(directory / "auth.conf", authorization_block(creds))
    print(f"credentials for {', '.join(creds)} and auth.conf in {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
