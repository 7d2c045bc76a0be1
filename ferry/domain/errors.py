"""ferry's own error hierarchy. Adapters translate third-party errors into these at the edge."""

from __future__ import annotations


class FerryError(Exception):
    """Base of every error ferry raises on purpose."""

    code = "FERRY_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- input ---------------------------------------------------------------
class InvalidInput(FerryError):
    code = "INVALID_INPUT"


class InvalidRef(InvalidInput):
    code = "INVALID_REF"


class InvalidPath(InvalidInput):
    code = "INVALID_PATH"


class NotFound(FerryError):
    code = "NOT_FOUND"


class Conflict(FerryError):
    code = "CONFLICT"


# --- release history -----------------------------------------------------
class ConcurrencyError(Conflict):
    """Another writer appended to the release since the expected version."""

    code = "CONCURRENCY"


class InvariantViolation(Conflict):
    """A command the release's history does not allow."""

    code = "INVARIANT"


class SelfApproval(InvariantViolation):
    """Four-eyes: the requester may not approve their own release (unless the environment allows).
    The gateway answers 403: the rule refuses this caller, whatever the release's state."""

    code = "SELF_APPROVAL"


# --- git / build ---------------------------------------------------------
class RepositoryError(FerryError):
    code = "REPOSITORY"


class RefNotFound(RepositoryError, NotFound):
    code = "REF_NOT_FOUND"


class BuildError(FerryError):
    code = "BUILD"


# --- hosts ---------------------------------------------------------------
class HostError(FerryError):
    code = "HOST"

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class HostUnreachable(HostError):
    """Transient: network, refused connection, timeout."""

    code = "HOST_UNREACHABLE"


class HostKeyMismatch(HostError):
    """The host presented a key other than the pinned one. Permanent."""

    code = "HOST_KEY_MISMATCH"


class HostKeyUnknown(HostError):
    """No key pinned and the host's policy does not allow trust-on-first-use. Permanent."""

    code = "HOST_KEY_UNKNOWN"


class AuthenticationFailed(HostError):
    code = "AUTHENTICATION_FAILED"


# --- infrastructure ------------------------------------------------------
class StoreUnavailable(FerryError):
    code = "STORE_UNAVAILABLE"


class ArtifactNotFound(NotFound):
    code = "ARTIFACT_NOT_FOUND"
