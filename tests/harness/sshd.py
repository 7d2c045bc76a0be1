"""Real OpenSSH hosts for tests: the same local sshd that `ferry up --demo` starts."""

from ferry.local.localsshd import SSHD, SshdHost, harness_unavailable_reason, pids_in_mount_namespace

__all__ = ["SSHD", "SshdHost", "harness_unavailable_reason", "pids_in_mount_namespace"]
