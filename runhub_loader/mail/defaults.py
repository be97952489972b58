"""The sender's defaults, in one place: `runhub sender`'s options and SenderConfig both read them
(a module of constants only, so that the CLI can show them without importing the daemon)."""
from __future__ import annotations

SMTP_URL = "smtp://127.0.0.1:2525"
FROM_ADDR = "Run Hub <runhub@localhost>"
UNSUBSCRIBE_URL = "https://localhost/unsubscribe?token={token}"  # {token}: the signed token
DASHBOARD_URL = "https://localhost/projects/{projectId}/run"     # a digest's link; {projectId}: the project's id
CONCURRENCY = 8         # SMTP sessions, one per worker
BATCH = 32              # messages claimed ahead of the workers
LEASE_SECONDS = 120     # how long a claimed message stays the sender's without a heartbeat
POLL_SECONDS = 5.0      # poll this often even without a NOTIFY
WAKE_SECONDS = 0.2      # a NOTIFY wakes the sender at most this often
METRICS_HOST = "127.0.0.1"
RELAY_PROBE_MAX_S = 30.0  # while the relay is down, probe it at most this far apart
