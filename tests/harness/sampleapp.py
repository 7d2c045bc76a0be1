"""The sample web app released by the tests: the same one `ferry up --demo` releases."""

from ferry.local.demoapp import (
    APP_PY,
    SampleRepo,
    health_url,
    make_sample_repo,
    restart_command,
    stop_command,
)

__all__ = ["APP_PY", "SampleRepo", "make_sample_repo", "restart_command", "health_url", "stop_command"]
