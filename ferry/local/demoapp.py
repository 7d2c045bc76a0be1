"""A tiny web app in a real git repository: what `ferry up --demo` and the tests release.

`app.py` serves `GET /` with the release's VERSION and `GET /healthz` with 200,
or 500 when the release holds a `FAIL_HEALTH` file or `SAMPLEAPP_FAIL_HEALTH=1`.
So does `<deploy_path>/shared/FAIL_HEALTH` on one host. It resolves its own directory
once at start, so a running instance keeps serving its own release after `current` moves.
"""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

APP_PY = """\
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

HERE = os.path.dirname(os.path.realpath(__file__))


def read_version():
    with open(os.path.join(HERE, "VERSION")) as f:
        return f.read().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            status, body = 200, read_version() + "\\n"
        elif self.path == "/healthz":
            failing = os.path.exists(os.path.join(HERE, "FAIL_HEALTH"))
            # <deploy_path>/shared/FAIL_HEALTH makes one host unhealthy, whatever the release
            failing = failing or os.path.exists(os.path.join(HERE, "..", "..", "shared", "FAIL_HEALTH"))
            failing = failing or os.environ.get("SAMPLEAPP_FAIL_HEALTH") == "1"
            status, body = (500, "unhealthy\\n") if failing else (200, "ok\\n")
        else:
            status, body = 404, "not found\\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\\n" % (self.address_string(), fmt % args))


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    server = HTTPServer((host, port), Handler)
    print("sampleapp %s listening on %s:%d" % (read_version(), host, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
"""

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "ferry tests",
    "GIT_AUTHOR_EMAIL": "tests@ferry.invalid",
    "GIT_COMMITTER_NAME": "ferry tests",
    "GIT_COMMITTER_EMAIL": "tests@ferry.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


@dataclass
class SampleRepo:
    path: Path

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()

    def git(self, *args: str) -> str:
        env = {**os.environ, **_GIT_ENV}
        done = subprocess.run(
            ["git", "-C", str(self.path), *args], env=env, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    def commit(self, version: str, fail_health: bool = False) -> str:
        """Write VERSION (and FAIL_HEALTH when asked), commit, return the commit sha."""
        (self.path / "VERSION").write_text(version + "\n")
        marker = self.path / "FAIL_HEALTH"
        if fail_health:
            marker.write_text("this release fails its health check\n")
        else:
            marker.unlink(missing_ok=True)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", f"version {version}")
        return self.git("rev-parse", "HEAD")

    def archive(self, sha: str) -> bytes:
        """The commit's tree as an uncompressed tar (what a build with no hooks would package)."""
        env = {**os.environ, **_GIT_ENV}
        out = subprocess.run(
            ["git", "-C", str(self.path), "archive", "--format=tar", sha],
            env=env,
            check=True,
            capture_output=True,
        )
        return out.stdout

    def archive_stream(self, sha: str) -> io.BytesIO:
        return io.BytesIO(self.archive(sha))


def make_sample_repo(path: str | os.PathLike[str]) -> SampleRepo:
    """A new git repository at `path` holding app.py; no commit yet."""
    repo = SampleRepo(Path(path))
    repo.path.mkdir(parents=True, exist_ok=True)
    repo.git("init", "-q", "-b", "main")
    (repo.path / "app.py").write_text(APP_PY)
    return repo


def restart_command(port: int) -> str:
    """Shell command run with cwd <deploy_path>/current: stop the previous instance, start this one detached.

    Uses FERRY_DEPLOY_PATH (exported by the agent) for the pid file and log under shared/, and binds to
    FERRY_HOST_ADDRESS (falling back to 127.0.0.1).
    """
    return f"""\
shared="${{FERRY_DEPLOY_PATH:?FERRY_DEPLOY_PATH not set}}/shared"
pidfile="$shared/sampleapp.pid"
if [ -f "$pidfile" ]; then
  old="$(cat "$pidfile")"
  kill "$old" 2>/dev/null || true
  i=0
  # A stopped daemon may linger as a zombie until init reaps it: treat state Z as gone.
  while [ -e "/proc/$old" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$old/status" 2>/dev/null \
    && [ "$i" -lt 100 ]; do
    sleep 0.05; i=$((i + 1))
  done
  kill -9 "$old" 2>/dev/null || true
  rm -f "$pidfile"
fi
address="${{FERRY_HOST_ADDRESS:-127.0.0.1}}"
setsid nohup python3 app.py "$address" {int(port)} >>"$shared/sampleapp.log" 2>&1 </dev/null &
echo $! >"$pidfile"
echo "started sampleapp pid $(cat "$pidfile") on $address:{int(port)}"
"""


def health_url(port: int) -> str:
    """The health URL as configured in a project: the agent substitutes {address}."""
    return f"http://{{address}}:{int(port)}/healthz"


def stop_command() -> str:
    """Shell command that stops the app started by restart_command (for tests that want it gone early)."""
    pidfile = '"$FERRY_DEPLOY_PATH/shared/sampleapp.pid"'
    return f"[ -f {pidfile} ] && kill $(cat {pidfile}) 2>/dev/null; rm -f {pidfile}; true"


__all__ = ["SampleRepo", "make_sample_repo", "restart_command", "health_url", "stop_command"]
