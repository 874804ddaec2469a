"""The relation matrix, proven on the mix itself.

Slot k says the constant 2**k, so every output sample is a bitmask of who was heard.
"""

import numpy as np
import pytest

from media.mixer import Mixer

LEGS = ["a", "b", "c", "d"]


def _mixer() -> tuple[Mixer, np.ndarray]:
    mixer = Mixer(frame_samples=8, capacity=4)
    for leg in LEGS:
        mixer.add(leg)
    frames = np.zeros((4, 8), dtype=np.int16)
    for leg in LEGS:
        frames[mixer.slot(leg)] = 1 << LEGS.index(leg)
    return mixer, frames


def heard(mixer: Mixer, frames: np.ndarray) -> dict[str, set[str]]:
    out = mixer.mix(frames)
    result = {}
    for leg in LEGS:
        values = set(out[mixer.slot(leg)].tolist())
        assert len(values) == 1
        mask = values.pop()
        result[leg] = {other for other in LEGS if mask & (1 << LEGS.index(other))}
        for other in LEGS:
            assert mixer.hears(leg, other) == (other in result[leg]), (leg, other)
    return result


def test_mix_minus_everyone_hears_everyone_else() -> None:
    mixer, frames = _mixer()
    assert heard(mixer, frames) == {leg: set(LEGS) - {leg} for leg in LEGS}


def test_mute_removes_a_speaker_from_everyone() -> None:
    mixer, frames = _mixer()
    mixer.set_muted("b", True)
    result = heard(mixer, frames)
    assert result["a"] == {"c", "d"} and result["b"] == {"a", "c", "d"}
    mixer.set_muted("b", False)
    assert heard(mixer, frames)["a"] == {"b", "c", "d"}


def test_deaf_hears_nothing_but_is_heard() -> None:
    mixer, frames = _mixer()
    mixer.set_deaf("c", True)
    result = heard(mixer, frames)
    assert result["c"] == set()
    assert "c" in result["a"]


def test_whisper_reaches_only_its_target() -> None:
    mixer, frames = _mixer()
    mixer.set_whisper("d", {"a"})
    result = heard(mixer, frames)
    assert result["a"] == {"b", "c", "d"}
    assert result["b"] == {"a", "c"} and result["c"] == {"a", "b"}
    assert result["d"] == {"a", "b", "c"}, "the whisperer hears the bridge"


def test_monitor_hears_all_and_is_heard_by_none() -> None:
    mixer, frames = _mixer()
    mixer.set_monitor("d", True)
    result = heard(mixer, frames)
    assert result["d"] == {"a", "b", "c"}
    assert all("d" not in result[leg] for leg in "abc")


def test_one_way_pair_mute() -> None:
    mixer, frames = _mixer()
    mixer.set_pair_mute("a", "b", True)
    result = heard(mixer, frames)
    assert result["b"] == {"c", "d"}
    assert "b" in result["a"], "only one direction is muted"


def test_floor_only_the_holder_is_heard() -> None:
    mixer, frames = _mixer()
    mixer.set_floor(True, "c")
    result = heard(mixer, frames)
    assert result == {"a": {"c"}, "b": {"c"}, "c": set(), "d": {"c"}}
    mixer.set_floor(True, None)
    assert heard(mixer, frames) == {leg: set() for leg in LEGS}
    mixer.set_floor(False)
    assert heard(mixer, frames)["a"] == {"b", "c", "d"}


def test_slots_are_reused_and_grow() -> None:
    mixer = Mixer(frame_samples=4, capacity=2)
    for i in range(40):
        mixer.add(f"l{i}")
    assert len(mixer) == 40 and mixer.capacity >= 40
    mixer.remove("l3")
    assert "l3" not in mixer
    assert mixer.add("new") == 3


def test_clipping_saturates_instead_of_wrapping() -> None:
    mixer = Mixer(frame_samples=4, capacity=3)
    for leg in "xyz":
        mixer.add(leg)
    frames = np.full((3, 4), 30000, dtype=np.int16)
    out = mixer.mix(frames)
    assert (out == 32767).all()


def test_unknown_whisper_target_is_refused() -> None:
    mixer, _ = _mixer()
    with pytest.raises(KeyError):
        mixer.set_whisper("a", {"zz"})
