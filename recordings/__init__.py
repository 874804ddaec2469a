"""Recordings: taps on bridges and legs, crash-safe segment files, index, export.

``writer``    SegmentedRecorder (PCM in, closed+fsynced segment files out) and the
              DiskWriter threads that encode and write off the event loop
``framing``   Ogg Opus pages and FLAC metadata, pure functions over bytes
``index``     RecordingIndex on ``DATA_DIR/recordings.sqlite3``; crash recovery
``recorder``  BridgeRecorder, the glue the mixer calls
``audio``     decoding segments back to PCM, tolerant of a torn tail
``export``    one playable file (.ogg/.opus, .flac, .wav) per recording
``errors``    the package's exception tree

Sits below ``hub/``: imports nothing from it.
"""
