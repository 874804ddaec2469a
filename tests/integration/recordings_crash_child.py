"""Child of test_recordings_crash.py: records a 440 Hz tone in real time until killed.

``python recordings_crash_child.py DATA_DIR CODEC``: opens the recordings index in
DATA_DIR, starts a bridge recording (2 s segments, flushed every second) with one
participant, prints ``{"recording_id": ..., "started_at": ...}`` on one line, then
feeds 20 ms frames paced from the start time, like the mixer's tick, until it is
killed (or gives up after a minute, so a lost child never runs on).
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from recordings.index import RecordingIndex
from recordings.recorder import BridgeRecorder

RATE = 8000
FRAME = RATE // 50
GIVE_UP = 60.0


def main() -> int:
    data_dir, codec = Path(sys.argv[1]), sys.argv[2]
    index = RecordingIndex.open(data_dir)
    started_at = time.time()
    bridge = BridgeRecorder(
        index,
        data_dir,
        "crash-bridge",
        "C1",
        RATE,
        codec=codec,
        segment_seconds=2.0,
        flush_seconds=1.0,
        now=started_at,
    )
    bridge.leg_joined("L1", "alice", started_at)
    print(json.dumps({"recording_id": bridge.recording_id, "started_at": started_at}), flush=True)
    phase = np.arange(FRAME)
    number = 0
    while number * 0.02 < GIVE_UP:
        now = started_at + number * 0.02
        delay = now - time.time()
        if delay > 0:
            time.sleep(delay)  # the tick's pacing, from the absolute start
        t = (phase + number * FRAME) / RATE
        bridge.on_mix(np.round(16383 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), now)
        number += 1
    bridge.close(time.time(), wait=True)
    return 3


if __name__ == "__main__":
    sys.exit(main())
