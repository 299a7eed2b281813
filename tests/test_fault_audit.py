"""The fault tests' audit (tests/fault_system.py `audit`) counts a window the same way as the
whole run: a device whose clock steps back re-uses a label, and a window that starts between
the two sends must not pair its reading with the earlier one's stored copy and call it out of
order (the soak's per-fault audits said "out of order 1" where the whole run's said 0).

The audit reads only `truth()`, `stored(room)` and `rooms`, so a stand-in for the running
system is enough here: the pairing is what is under test, not Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from monitor.model.readings import Reading
from tests.fault_system import audit

ROOM, DEV = "room-1", "mon-1"


def sent(recv_ms: int, device_ms: int, hr: float) -> dict[str, Any]:
    """A truth-log reading: received at recv_ms, labelled by the device's clock."""
    return {"kind": "reading", "expect": "stored", "room": ROOM, "device": DEV, "ts_ms": recv_ms,
            "device_ts_ms": device_ms, "values": {"hr": hr}, "flags": []}


def stored(label_ms: int, recv_ms: int, hr: float) -> Reading:
    return Reading(ROOM, DEV, label_ms, {"hr": hr}, frozenset(), recv_ms)


@dataclass
class Recorded:
    """What the audit reads of a running system: the truth log and each room's stream."""

    sent: list[dict[str, Any]]
    streams: dict[str, list[Reading]] = field(default_factory=dict)
    rooms: list[str] = field(default_factory=lambda: [ROOM])

    def truth(self) -> list[dict[str, Any]]:
        return self.sent

    def stored(self, room: str) -> list[Reading]:
        return self.streams.get(room, [])


# The device's clock steps back 6 s after its first reading, and it sends the same HR again
# under the re-used label: one identity, stored once by design (docs/reliability.md).
T = 1_800_000_000_000
SYSTEM = Recorded(
    sent=[sent(T, T, 70), sent(T + 1_000, T + 1_000, 71), sent(T + 5_500, T + 5_500, 72), sent(T + 6_000, T, 70)],
    streams={ROOM: [stored(T, T, 70), stored(T + 1_000, T + 1_000, 71), stored(T + 5_500, T + 5_500, 72)]},
)


def test_a_window_starting_between_two_sends_of_one_label_is_in_order() -> None:
    window = audit(SYSTEM, T + 5_000, T + 7_000)  # X (72) and the re-sent 70, not its first send
    assert window.line() == "accepted 2, stored 2, lost 0, duplicated 0, out of order 0", window.out_of_order
    assert window.identical == 1


def test_the_whole_run_counts_the_same_readings() -> None:
    whole = audit(SYSTEM, T - 1_000, T + 7_000)
    assert whole.line() == "accepted 4, stored 4, lost 0, duplicated 0, out of order 0"
    assert whole.identical == 1


def test_a_reading_really_stored_out_of_order_is_still_caught() -> None:
    swapped = Recorded(sent=SYSTEM.sent, streams={ROOM: [stored(T, T, 70), stored(T + 5_500, T + 5_500, 72),
                                                          stored(T + 1_000, T + 1_000, 71)]})
    assert len(audit(swapped, T - 1_000, T + 7_000).out_of_order) == 1
    # and a reading sent before the window is not counted lost in it when missing
    missing_first = Recorded(sent=SYSTEM.sent, streams={ROOM: SYSTEM.streams[ROOM][1:]})
    window = audit(missing_first, T + 5_000, T + 7_000)
    assert (window.accepted, len(window.lost)) == (2, 1)  # the re-sent 70 has nothing stored under its label
