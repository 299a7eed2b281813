"""`python -m monitor.store.embedded_broker --config FILE`: the pure-Python fallback MQTT broker (amqtt).

Used only when no `mosquitto` binary is installed; speaks MQTT 3.1.1 on 127.0.0.1. FILE is
the amqtt configuration monitor/store/embedded.py writes (listener, password file, ACL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import warnings
from typing import Any

from amqtt.broker import Broker


async def _serve(config: dict[str, Any]) -> None:
    broker = Broker(config)
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
    ap.add_argument("--config", required=True)
    with open(ap.parse_args().config, encoding="utf-8") as fh:
        config = json.load(fh)
    # amqtt calls its (subscribe) ACL option "acl" and warns that it will be renamed
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="amqtt")
    asyncio.run(_serve(config))


if __name__ == "__main__":
    main()
