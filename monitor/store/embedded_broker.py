"""`python -m monitor.store.embedded_broker --port P`: the pure-Python fallback MQTT broker (amqtt).

Used only when no `mosquitto` binary is installed; speaks MQTT 3.1.1 on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from amqtt.broker import Broker


async def _serve(port: int) -> None:
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}})
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    """Run the broker until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    asyncio.run(_serve(ap.parse_args().port))


if __name__ == "__main__":
    main()
