"""Serial transport: open a device's link with pyserial `serial_for_url`. Bytes only.

`port` may be a device path (`/dev/ttyUSB0`, a pty symlink), `socket://host:port` (a serial
device server in raw TCP mode) or `rfc2217://host:port` (a device server with remote port
control). Line settings come from the device's config. Everything else — framing, parsing,
reconnecting — happens above this module, so every transport shares it.
"""

from __future__ import annotations

import serial

from monitor.model.config import DeviceConfig

READ_TIMEOUT_S = 0.1  # how long a read waits for a first byte; bounds the supervisor's tick
WRITE_TIMEOUT_S = 1.0  # a link that will not take a few command bytes in 1 s is broken

# What "the link is gone or cannot be opened" looks like: pyserial raises SerialException
# (an OSError) for EIO/EOF/unplug; ValueError for a URL it cannot handle.
LINK_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, ValueError)


def open_link(dev: DeviceConfig, read_timeout_s: float = READ_TIMEOUT_S) -> serial.SerialBase:
    """Open `dev.port` with the device's baud rate, byte size, parity and stop bits."""
    assert dev.port, "a serial device has a port (config validation guarantees it)"
    return serial.serial_for_url(
        dev.port,
        baudrate=dev.default_baudrate,
        bytesize=dev.bytesize,
        parity=dev.parity,
        stopbits=dev.stopbits,
        timeout=read_timeout_s,
        write_timeout=WRITE_TIMEOUT_S,
    )


def read_available(link: serial.SerialBase) -> bytes:
    """Wait up to the read timeout for a first byte, then take whatever else is buffered."""
    data = link.read(1)
    if data:
        waiting = link.in_waiting
        if waiting:
            data += link.read(waiting)
    return bytes(data)
