"""Where a simulated serial device's bytes go: a pty linked at the configured port path, or
a TCP listener at `socket://host:port` (as a serial device server would offer).

Both links only move bytes. `write()` returns how many bytes a listener could have
received; bytes sent while nobody has the port open are lost, as on a real serial line,
and counted in `dropped_bytes`. `close()` is "unplug": the pty disappears (its symlink is
removed) or the listener and its connections close; `open()` plugs it back in.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import tty
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)


class LinkError(OSError):
    """A link could not be opened (bad port, path in use, address in use)."""


class PtyLink:
    """A pseudo-terminal whose slave is symlinked at `path` (parent directories created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.master: int | None = None
        self.slave_name = ""
        self.dropped_bytes = 0

    @property
    def where(self) -> str:
        """Human description of the link's address."""
        return str(self.path)

    def open(self) -> None:
        """Create the pty and point the symlink at its slave."""
        if self.master is not None:
            return
        if self.path.exists() and not self.path.is_symlink():
            raise LinkError(errno.EEXIST, f"{self.path} exists and is not a symlink we may replace")
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: the host must see bytes as sent
        self.slave_name = os.ttyname(slave)
        os.close(slave)  # keep none open ourselves: POLLHUP then tells us nobody listens
        os.set_blocking(master, False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.path)  # atomic: a reader never sees a half-made link
        self.master = master

    def close(self) -> None:
        """Unplug: remove the symlink (if still ours) and destroy the pty."""
        if self.master is None:
            return
        try:
            if self.path.is_symlink() and os.readlink(self.path) == self.slave_name:
                self.path.unlink()
        except OSError as e:
            log.warning("could not remove %s: %s", self.path, e)
        os.close(self.master)
        self.master = None

    @property
    def is_open(self) -> bool:
        """Is the device plugged in?"""
        return self.master is not None

    def listener_present(self) -> bool:
        """Has someone (the host) got the port open right now?"""
        if self.master is None:
            return False
        p = select.poll()
        p.register(self.master, select.POLLHUP)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def write(self, data: bytes) -> int:
        """Send bytes; returns bytes delivered (the rest counted in dropped_bytes)."""
        if self.master is None or not self.listener_present():
            self.dropped_bytes += len(data)
            return 0
        sent = 0
        while sent < len(data):
            try:
                sent += os.write(self.master, data[sent:])
            except BlockingIOError:
                # the host is not reading: wait briefly, then count the rest as lost
                _, w, _ = select.select([], [self.master], [], 0.2)
                if not w:
                    break
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the host closed the port meanwhile
                    raise
                break
        self.dropped_bytes += len(data) - sent
        return sent

    def read(self, timeout_s: float) -> bytes:
        """Bytes the host sent, waiting up to timeout_s (b"" when none)."""
        if self.master is None:
            return b""
        r, _, _ = select.select([self.master], [], [], timeout_s)
        if not r:
            return b""
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # nobody has the slave open
                return b""
            raise


class TcpLink:
    """A TCP listener on host:port; every connected client gets the device's bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: socket.socket | None = None
        self.clients: list[socket.socket] = []
        self.dropped_bytes = 0

    @property
    def where(self) -> str:
        """Human description of the link's address."""
        return f"socket://{self.host}:{self.port}"

    def open(self) -> None:
        """Start listening."""
        if self.server is not None:
            return
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((self.host, self.port))
        except OSError as e:
            srv.close()
            raise LinkError(e.errno, f"cannot listen on {self.where}: {e.strerror}") from None
        srv.listen(4)
        srv.setblocking(False)
        self.server = srv

    def close(self) -> None:
        """Unplug: drop every connection and stop listening."""
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def is_open(self) -> bool:
        """Is the device plugged in?"""
        return self.server is not None

    def _accept(self) -> None:
        if self.server is None:
            return
        while True:
            try:
                conn, _ = self.server.accept()
            except BlockingIOError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(0.5)
            self.clients.append(conn)

    def listener_present(self) -> bool:
        """Is a client connected?"""
        self._accept()
        return bool(self.clients)

    def write(self, data: bytes) -> int:
        """Send to every client; returns bytes delivered to at least one."""
        self._accept()
        if not self.clients:
            self.dropped_bytes += len(data)
            return 0
        delivered = 0
        for c in list(self.clients):
            try:
                c.sendall(data)
                delivered = len(data)
            except OSError:  # the client went away (or stalled): forget it
                c.close()
                self.clients.remove(c)
        if not delivered:
            self.dropped_bytes += len(data)
        return delivered

    def read(self, timeout_s: float) -> bytes:
        """Bytes any client sent, waiting up to timeout_s."""
        self._accept()
        if not self.clients:
            if self.server is not None:
                select.select([self.server], [], [], timeout_s)
            return b""
        r, _, _ = select.select(self.clients, [], [], timeout_s)
        out = b""
        for c in r:
            try:
                data = c.recv(4096)
            except OSError:
                data = b""
            if not data:  # the client closed
                c.close()
                self.clients.remove(c)
            out += data
        return out


Link = PtyLink | TcpLink


def link_for(port: str, base_dir: Path | None = None) -> Link:
    """The link a serial device's configured `port` asks for: a path → pty, socket:// → TCP."""
    if port.startswith("socket://"):
        u = urlparse(port)
        if not u.hostname or not u.port:
            raise LinkError(errno.EINVAL, f"bad socket URL {port!r}; expected socket://host:port")
        return TcpLink(u.hostname, u.port)
    if "://" in port:
        raise LinkError(errno.EINVAL, f"cannot simulate a device at {port!r}: only paths and socket:// URLs")
    path = Path(port)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return PtyLink(path)
