"""The embedded local PostgreSQL 15 cluster behind `runhub db`.

A cluster lives in a project folder (default `.runhub/`), built from the system's PostgreSQL 15
binaries, with pg_cron preloaded. It listens on a unix socket inside the folder and on 127.0.0.1
only. PostgreSQL refuses to run as root, so when we are root the server runs as an unprivileged OS
user (`postgres` unless RUNHUB_DB_OS_USER says otherwise) while the Python side stays root.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

DEFAULT_DBNAME = "runhub"
SUPERUSER = "postgres"
BINDIR_CANDIDATES = ("/usr/lib/postgresql/15/bin",)


class EmbeddedError(RuntimeError):
    """The embedded cluster could not be set up, started or reached."""


def pg_bindir() -> Path:
    configured = os.environ.get("RUNHUB_PG_BINDIR")
    for candidate in ([configured] if configured else []) + list(BINDIR_CANDIDATES):
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise EmbeddedError(
        "PostgreSQL 15 binaries not found (looked in /usr/lib/postgresql/15/bin); "
        "install postgresql-15 or set RUNHUB_PG_BINDIR"
    )


def default_home() -> Path:
    return Path(os.environ.get("RUNHUB_HOME", ".runhub")).resolve()


def _server_user() -> str | None:
    """The OS user the server runs as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("RUNHUB_DB_OS_USER", SUPERUSER)


def free_port() -> int:
    """A TCP port free on loopback now (for the cluster, a sink, a test server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One embedded cluster, addressed by its home folder."""

    home: Path

    # -- layout -------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "db.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}

    @property
    def root(self) -> Path:
        """Where the data and socket folders live (see `_choose_root`)."""
        recorded = self.state().get("root")
        return Path(recorded) if recorded else self.home

    @property
    def datadir(self) -> Path:
        return self.root / "pgdata"

    @property
    def socketdir(self) -> Path:
        return self.root / "run"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    @property
    def port(self) -> int:
        port = self.state().get("port")
        if not port:
            raise EmbeddedError(f"no cluster in {self.home}: run `runhub db start` first")
        return int(port)

    # -- running commands as the server's user --------------------------------------------------
    def _run(self, argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        user = _server_user()
        if user:
            argv = ["runuser", "-u", user, "--"] + argv
        proc = subprocess.run(argv, capture_output=True, text=True, **kw)
        if check and proc.returncode != 0:
            raise EmbeddedError(
                f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def _choose_root(self) -> Path:
        """The home folder itself, unless the server's user cannot reach it (e.g. under /root,
        mode 700): then a private folder under /var/tmp keyed by the home path."""
        user = _server_user()
        if user is None or self._run(["test", "-x", str(self.home)], check=False).returncode == 0:
            return self.home
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"runhub-{digest}"

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(mode)

    # -- lifecycle ------------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self, fast: bool = False, cron: bool = True) -> None:
        """Create the cluster: initdb, runhub's server settings, a random free port.
        cron=False leaves pg_cron out of shared_preload_libraries (to test servers without it)."""
        self.home.mkdir(parents=True, exist_ok=True)
        root = self._choose_root()
        state = {"root": str(root), "port": free_port(), "password": secrets.token_urlsafe(18), "fast": fast}
        self.state_file.write_text(json.dumps(state, indent=2))
        self.state_file.chmod(0o600)
        self._own(root, 0o755)
        self._own(self.datadir, 0o700)
        self._own(self.socketdir, 0o700)  # only the server's user (and root) may use the socket
        bindir = pg_bindir()
        self._run([
            str(bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "-E", "UTF8",
            "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
        ])
        settings = {
            "port": state["port"],
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socketdir}'",
            "max_worker_processes": 32,
            "max_connections": 200,
            "timezone": "'UTC'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        if cron:
            settings.update({"shared_preload_libraries": "'pg_cron'", "cron.database_name": "'postgres'",
                             "cron.use_background_workers": "on"})
        if fast:  # throwaway test clusters: durability buys nothing there
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        self._write_as_server_user(self.datadir / "runhub.conf", conf)
        self._append_as_server_user(self.datadir / "postgresql.conf", "\ninclude 'runhub.conf'\n")

    def _write_as_server_user(self, path: Path, text: str) -> None:
        self._run(["tee", str(path)], input=text)

    def _append_as_server_user(self, path: Path, text: str) -> None:
        self._run(["tee", "-a", str(path)], input=text)

    def running(self) -> bool:
        if not self.initialized():
            return False
        proc = self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "status"], check=False)
        return proc.returncode == 0

    def start(self, fast: bool = False, cron: bool = True) -> None:
        """Initialise if needed, start if stopped, and make sure the runhub database exists."""
        if not self.initialized():
            self.init(fast=fast, cron=cron)
        if not self.running():
            self._own(self.socketdir, 0o700)
            self._run([
                str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "120", "start",
            ])
        self._wait_ready()
        self._bootstrap()

    def stop(self) -> None:
        if self.running():
            self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def restart(self) -> None:
        """Fast restart, keeping the port: used by tests of reconnecting listeners."""
        self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                   "-m", "fast", "-w", "restart"])
        self._wait_ready()

    def destroy(self) -> None:
        self.stop()
        root = self.root
        shutil.rmtree(self.datadir, ignore_errors=True)
        shutil.rmtree(self.socketdir, ignore_errors=True)
        if root != self.home:
            shutil.rmtree(root, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        isready = [str(pg_bindir() / "pg_isready"), "-h", str(self.socketdir), "-p", str(self.port), "-q"]
        while subprocess.run(isready).returncode != 0:
            if time.monotonic() > deadline:
                raise EmbeddedError(f"server did not accept connections within {timeout}s; see {self.logfile}")
            time.sleep(0.1)

    def _bootstrap(self) -> None:
        import psycopg

        state = self.state()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if not state.get("password_set"):  # for loopback TCP clients (scram-sha-256)
                conn.execute(f"ALTER ROLE {SUPERUSER} PASSWORD '{state['password']}'")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEFAULT_DBNAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DEFAULT_DBNAME}"')
        if not state.get("password_set"):
            state["password_set"] = True
            self.state_file.write_text(json.dumps(state, indent=2))

    # -- addresses -------------------------------------------------------------------------------
    def url(self, dbname: str = DEFAULT_DBNAME) -> str:
        """A libpq URL over the unix socket (trust auth; the socket folder is private)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={quote(str(self.socketdir), safe='')}&port={self.port}"

    def tcp_url(self, dbname: str = DEFAULT_DBNAME) -> str:
        """A libpq URL over loopback TCP with the generated password."""
        password = quote(self.state()["password"], safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{dbname}"

    def describe(self) -> dict:
        running = self.running()
        info = {"home": str(self.home), "initialized": self.initialized(), "running": running}
        if self.initialized():
            info.update({"datadir": str(self.datadir), "port": self.port, "log": str(self.logfile)})
        if running:
            info["url"] = self.url()
        return info
