"""One emitter per wire format; `streaming_emitter(protocol)` builds the streaming ones."""

from __future__ import annotations

from devices.simulators.emitters.ansar_b import AnsarB
from devices.simulators.emitters.masimo_ascii import MasimoAscii
from devices.simulators.emitters.nonin_df7 import NoninDf7

STREAMING = {"masimo-ascii": MasimoAscii, "nonin-df7": NoninDf7, "ansar-b": AnsarB}


def streaming_emitter(protocol: str) -> MasimoAscii | NoninDf7 | AnsarB:
    """A new emitter for a device that talks unasked (masimo-ascii, nonin-df7, ansar-b)."""
    try:
        return STREAMING[protocol]()
    except KeyError:
        raise ValueError(f"{protocol!r} is not a streaming serial protocol") from None
