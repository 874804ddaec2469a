"""The transfer route's body: ``oneOf`` target (blind) / to_call (attended), as enforced."""

from __future__ import annotations

from typing import Any

import pytest

from console.errors import ApiError
from console.queue_api import TRANSFER
from console.validation import validate


@pytest.mark.parametrize("body", [{"target": "carol"}, {"to_call": "D7"}])
def test_either_form_is_accepted(body: dict[str, Any]) -> None:
    validate(body, TRANSFER)


@pytest.mark.parametrize("body, message", [
    ({}, "body: give 'target' or 'to_call'"),
    ({"target": "carol", "to_call": "D7"}, "body: give only one of 'target' or 'to_call'"),
    ({"to_call": ""}, "body.to_call: must not be empty"),
    ({"to_call": "   "}, "does not match"),
    ({"to_call": 7}, "body.to_call: expected a string"),
    ({"to_call": "D7", "leg": "L1"}, "unknown field 'leg'"),
])
def test_bad_bodies_say_what_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError, match=message) as info:
        validate(body, TRANSFER)
    assert info.value.status == 422


def test_one_of_with_general_branches() -> None:
    schema = {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]}
    validate("long", schema)
    with pytest.raises(ApiError, match="more than one"):
        validate("ab", schema)
    with pytest.raises(ApiError, match="expected a string"):
        validate(3, schema)
