"""The embedded local PostgreSQL 15 cluster behind `runhub db`.

A cluster lives in a project folder (default `.runhub/`), built from the system's PostgreSQL 15
binaries, with pg_cron preloaded. It listens on a unix socket inside the folder and on 127.0.0.1
only. PostgreSQL refuses to run as root, so when we are root the server runs as an unprivileged OS
user (`postgres` unless RUNHUB_DB_OS_USER says otherwise) while the Python side stays root.

Being root, we create and chown the cluster's folders, sometimes in world-writable /var/tmp: every such
folder is opened without following a symlink and refused when someone else owns it, so a folder
planted by another local user (say pgdata -> /etc) is never chowned or chmodded.
"""
from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

DEFAULT_DBNAME = "runhub"
SUPERUSER = "postgres"
BINDIR_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
FALLBACK_PARENT = Path("/var/tmp")  # for a home the server's user cannot reach
FALLBACK_PREFIX = "runhub-"
CLUSTER_FOLDERS = ("pgdata", "run")  # inside the root; both 0700 and the server user's


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
    return absolute_home(Path(os.environ.get("RUNHUB_HOME", ".runhub")))


def absolute_home(home: Path) -> Path:
    """The home as an absolute path, its last component as given: never resolved through a symlink
    (Cluster refuses a home that is one, rather than act on whatever it points at)."""
    return Path(os.path.abspath(home))


def _server_user() -> str | None:
    """The OS user the server runs as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("RUNHUB_DB_OS_USER", SUPERUSER)


def _server_ids() -> tuple[int, int] | None:
    """(uid, gid) of the server's user, or None when it is ourselves."""
    user = _server_user()
    if user is None:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise EmbeddedError(f"OS user {user!r} (RUNHUB_DB_OS_USER) does not exist") from None
    return entry.pw_uid, entry.pw_gid


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _open_dir_no_follow(name: str | Path, shown: Path, owners: set[int] | None, *, dir_fd: int | None = None,
                        create: bool = False) -> int:
    """A descriptor on the directory `name` (relative to dir_fd if given), never through a symlink at
    its last component. Creates it first if `create` and missing (0700: umask can only narrow it).
    Refuses a symlink, a non-directory, or a directory owned by anyone outside `owners` (None: any
    owner): another local user may have planted it for us to chown. `shown` names it in errors."""
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise EmbeddedError(f"{shown} is missing; `runhub db destroy` forgets a cluster whose folder is gone") from None
    except NotADirectoryError:
        is_link = stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
        raise EmbeddedError(f"refusing {shown}: it is {'a symlink' if is_link else 'not a directory'}; "
                            "someone may have planted it, so it was left untouched") from None
    owner = os.fstat(fd).st_uid
    if owners is not None and owner not in owners:
        os.close(fd)
        expected = " or ".join(sorted(_user_name(uid) for uid in owners))
        raise EmbeddedError(f"refusing {shown}: it is owned by {_user_name(owner)}, not {expected}; "
                            "someone may have planted it, so it was left untouched")
    return fd


def _set_owner_and_mode(fd: int, ids: tuple[int, int] | None, mode: int) -> None:
    if ids:
        os.fchown(fd, *ids)
    os.fchmod(fd, mode)


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

    def check_home(self) -> None:
        """The home itself, before anything in it is read or changed: not a symlink (another local
        user may plant one in a world-writable folder, pointing at a folder of ours to chown or
        delete), a directory, and ours or the server's user's (whom we gave it to). A missing home
        is made by init."""
        try:
            info = os.lstat(self.home)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise EmbeddedError(f"refusing {self.home}: it is {'a symlink' if stat.S_ISLNK(info.st_mode) else 'not a directory'}; "
                                "someone may have planted it, so it was left untouched")
        owners = self._owners()
        if info.st_uid not in owners:
            expected = " or ".join(sorted(_user_name(uid) for uid in owners))
            raise EmbeddedError(f"refusing {self.home}: it is owned by {_user_name(info.st_uid)}, not {expected}; "
                                "someone may have planted it, so it was left untouched")

    def state(self) -> dict:
        """db.json: where root keeps (and chowns) the cluster's folders, so only we may have written it.
        The home may belong to the server's user, who could otherwise swap in a file or a symlink."""
        self.check_home()
        try:
            fd = os.open(self.state_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise EmbeddedError(f"refusing {self.state_file}: it is a symlink") from None
        with os.fdopen(fd, encoding="utf-8") as file:
            owner = os.fstat(fd).st_uid
            if owner != os.geteuid():
                raise EmbeddedError(f"refusing {self.state_file}: it is owned by {_user_name(owner)}, "
                                    f"not {_user_name(os.geteuid())}")
            return json.load(file)

    def _save_state(self, state: dict) -> None:
        """Write db.json under a fresh name (0600), then rename it into place: never through a symlink."""
        fd, temporary = tempfile.mkstemp(prefix=".db.json.", dir=self.home)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(state, file, indent=2)
            os.replace(temporary, self.state_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

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
        mode 700): then the fallback folder db.json already records, else a new one made by
        mkdtemp under /var/tmp (an unpredictable name, created atomically 0700 by us)."""
        recorded = self.state().get("root")
        if recorded and Path(recorded).parent == FALLBACK_PARENT:
            return Path(recorded)  # the cluster's place: re-checked by _prepare_folders, never swapped
        if _server_user() is None or self._run(["test", "-x", str(self.home)], check=False).returncode == 0:
            return self.home
        return Path(tempfile.mkdtemp(prefix=FALLBACK_PREFIX, dir=FALLBACK_PARENT))

    @staticmethod
    def _owners() -> set[int]:
        """Who may own a folder of the cluster, the home included: us (before the chown) or the
        server's user (after it)."""
        ids = _server_ids()
        return {os.geteuid()} | ({ids[0]} if ids else set())

    def _prepare_folders(self, root: Path) -> None:
        """Give root, pgdata and run (created if missing) to the server's user, mode 0700 (the home:
        0755). Each is opened without following a symlink and checked before any fchown/fchmod."""
        ids = _server_ids()
        root_fd = _open_dir_no_follow(root, root, self._owners())
        try:
            _set_owner_and_mode(root_fd, ids, 0o755 if root == self.home else 0o700)
            for name in CLUSTER_FOLDERS:  # run: only the server's user (and root) may use the socket
                fd = _open_dir_no_follow(name, root / name, self._owners(), dir_fd=root_fd,
                                         create=True)
                try:
                    _set_owner_and_mode(fd, ids, 0o700)
                finally:
                    os.close(fd)
        finally:
            os.close(root_fd)

    # -- lifecycle ------------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self, fast: bool = False, cron: bool = True) -> None:
        """Create the cluster: initdb, runhub's server settings, a random free port.
        cron=False leaves pg_cron out of shared_preload_libraries (to test servers without it)."""
        self.check_home()
        self.home.mkdir(parents=True, exist_ok=True)
        recorded = self.state().get("root")
        root = self._choose_root()
        try:
            self._prepare_folders(root)
            self._initdb(root, fast, cron)
        except BaseException:
            if root != self.home and str(root) != recorded:  # the folder mkdtemp just made: ours alone
                shutil.rmtree(root, ignore_errors=True)
            raise

    def _initdb(self, root: Path, fast: bool, cron: bool) -> None:
        datadir, socketdir = root / "pgdata", root / "run"
        state = {"root": str(root), "port": free_port(), "password": secrets.token_urlsafe(18), "fast": fast}
        bindir = pg_bindir()
        self._run([
            str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "-E", "UTF8",
            "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
        ])
        settings = {
            "port": state["port"],
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{socketdir}'",
            "max_worker_processes": 32,
            "max_connections": 200,
            "max_prepared_transactions": 20,  # `runhub proxy move` commits on two shards at once
            "timezone": "'UTC'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        if cron:
            settings.update({"shared_preload_libraries": "'pg_cron'", "cron.database_name": "'postgres'",
                             "cron.use_background_workers": "on"})
        if fast:  # throwaway test clusters: durability buys nothing there
            settings.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        self._write_as_server_user(datadir / "runhub.conf", conf)
        self._append_as_server_user(datadir / "postgresql.conf", "\ninclude 'runhub.conf'\n")
        self._save_state(state)  # last: db.json names a root only once a cluster is in it

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
        if not self.running():
            if self.initialized():
                self._prepare_folders(self.root)  # re-check what db.json recorded before using it again
            else:
                self.init(fast=fast, cron=cron)
            self._run([
                str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                "-w", "-t", "120", "start",
            ])
        self._wait_ready()
        self._bootstrap()

    def stop(self) -> None:
        if self.running():
            self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def restart(self, mode: str = "fast") -> None:
        """Restart, keeping the port: used by tests of reconnecting listeners; mode "immediate" is
        a crash (no shutdown checkpoint: the server recovers from its WAL as after a power cut)."""
        if mode not in ("fast", "immediate"):
            raise ValueError(f"restart mode {mode!r}")
        self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                   "-m", mode, "-w", "restart"])
        self._wait_ready()

    def destroy(self) -> None:
        """Stop the cluster, delete its folders and forget it. A recorded root that fails the checks
        of _prepare_folders (a symlink, someone else's folder) is not ours: it is left untouched."""
        self.stop()
        root = self.root
        try:
            root_fd = _open_dir_no_follow(root, root, self._owners())
        except EmbeddedError:
            root_fd = None
        if root_fd is not None:
            try:
                for name in CLUSTER_FOLDERS:
                    shutil.rmtree(name, ignore_errors=True, dir_fd=root_fd)  # never follows symlinks
            finally:
                os.close(root_fd)
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
        from psycopg import sql

        from . import queries

        state = self.state()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if not state.get("password_set"):  # for loopback TCP clients (scram-sha-256)
                conn.execute(queries.SET_ROLE_PASSWORD.format(sql.Identifier(SUPERUSER), sql.Literal(state["password"])))
            exists = conn.execute(queries.DATABASE_EXISTS, (DEFAULT_DBNAME,)).fetchone()
            if not exists:
                conn.execute(queries.CREATE_DATABASE.format(sql.Identifier(DEFAULT_DBNAME)))
        if not state.get("password_set"):
            state["password_set"] = True
            self._save_state(state)

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
