"""The development SMTP sink (`runhub smtp-sink`, `runhub up`): every mail kept as a private .eml."""
from __future__ import annotations

import os
import pwd
import time
from pathlib import Path


def ehlo_responses(session, hostname: str, responses: list[str], pipelining: bool = True) -> list[str]:
    """For an aiosmtpd handle_EHLO hook: offer PIPELINING, as production MTAs do (aiosmtpd reads
    pipelined commands in order; it just does not say so)."""
    session.host_name = hostname  # the hook replaces aiosmtpd's own bookkeeping
    return responses[:-1] + (["250-PIPELINING"] if pipelining else []) + responses[-1:]


class UnsafeMailFolder(RuntimeError):
    """The mail folder is a symlink, not a directory, or someone else's: mail stays out of it."""


def open_private_folder(folder: Path) -> int:
    """A descriptor on `folder`, created 0700 if missing (umask can only narrow that, so no window).
    An existing one must be ours and a real directory (a planted symlink would send root's writes
    anywhere) and is made 0700: the mail in it is nobody else's to read."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except NotADirectoryError:
        raise UnsafeMailFolder(f"refusing to store mail in {folder}: it is a symlink or not a directory") from None
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        os.close(fd)
        raise UnsafeMailFolder(f"refusing to store mail in {folder}: it belongs to {_user_name(owner)}, "
                               f"who could read every mail, not to {_user_name(os.geteuid())}")
    os.fchmod(fd, 0o700)
    return fd


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def write_new_private_file(folder_fd: int, name: str, content: bytes) -> None:
    """Create `name` in the folder 0600 from the start; never over an existing file or through a symlink."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=folder_fd)
    with os.fdopen(fd, "wb") as file:
        file.write(content)


class EmlSink:
    """aiosmtpd handler: store each accepted mail as <dir>/<time>-<n>.eml, folder 0700, files 0600."""

    def __init__(self, folder: Path):
        self.folder = folder
        os.close(open_private_folder(folder))  # refuse an unsafe folder now, not at the first mail
        self._count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        return ehlo_responses(session, hostname, responses)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.store(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"

    def store(self, content: bytes) -> Path:
        # The folder is re-opened and re-checked for every mail: whoever owns its parent (the
        # server's user, for <home>/mail) could have swapped it for a symlink since.
        folder_fd = open_private_folder(self.folder)
        try:
            while True:
                self._count += 1
                name = f"{time.strftime('%Y%m%dT%H%M%S')}-{self._count:06d}.eml"
                try:
                    write_new_private_file(folder_fd, name, content)
                    return self.folder / name
                except FileExistsError:  # a sink restarted within the same second took this name
                    continue
        finally:
            os.close(folder_fd)


def serve_sink(folder: Path, host: str = "127.0.0.1", port: int = 2525):
    """Start the sink in a background thread; returns the aiosmtpd Controller (call .stop())."""
    from aiosmtpd.controller import Controller

    controller = Controller(EmlSink(folder), hostname=host, port=port)
    controller.start()
    return controller
