"""A real PgBouncer (Debian's) in transaction pooling in front of the test cluster, on loopback, run
as the server's OS user (PgBouncer refuses root): what most platform teams put before PostgreSQL."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from runhub_loader.db.embedded import Cluster, _server_ids, _server_user, free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    def __init__(self, cluster: Cluster, pool_size: int = 10):
        self.cluster = cluster
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="runhub-pgbouncer-"))
        self.log = self.dir / "pgbouncer.log"
        # Every database of the cluster, as its superuser over the unix socket (trusted there);
        # clients may name any user (auth_type any): the test is about pooling, not passwords.
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
* = host={cluster.socketdir} port={cluster.port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
logfile = {self.log}
pidfile = {self.dir / 'pgbouncer.pid'}
""")
        ids = _server_ids()
        if ids:
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, *ids)
        user = _server_user()
        argv = ([] if user is None else ["runuser", "-u", user, "--"]) + [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()

    def _wait_ready(self, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.process.stderr.read().decode(errors='replace')}"
                                   f"{self.log.read_text(errors='replace') if self.log.exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start listening")

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def errors(self) -> list[str]:
        """PgBouncer's own warnings and errors (its log)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
