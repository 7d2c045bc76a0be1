"""Git ref and repository URL checks: they live in ``ferry.domain.validation`` (the gateway uses them too)."""

from ferry.domain.validation import (
    MAX_REF_LENGTH,
    MAX_URL_LENGTH,
    display_url,
    validate_ref,
    validate_repo_url,
)

__all__ = ["MAX_REF_LENGTH", "MAX_URL_LENGTH", "display_url", "validate_ref", "validate_repo_url"]
