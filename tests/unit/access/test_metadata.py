"""The x-tfy-metadata header."""

from __future__ import annotations

import json

import pytest

from gateway.access.metadata import MAX_KEYS, parse_metadata
from gateway.errors import InvalidRequest


def test_absent_and_valid() -> None:
    assert parse_metadata(None) == {}
    assert parse_metadata("") == {}
    assert parse_metadata('{"env": "prod", "team": "ml"}') == {"env": "prod", "team": "ml"}
    assert parse_metadata(json.dumps({"v": "x" * 128})) == {"v": "x" * 128}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "not valid JSON"),
        ('["a"]', "JSON object whose values are strings"),
        ('{"a": 1}', "JSON object whose values are strings"),
        ('{"a": {"b": "c"}}', "JSON object whose values are strings"),
        (json.dumps({"a": "x" * 129}), "value of 'a' is longer than 128 characters"),
        (json.dumps({f"k{i}": "v" for i in range(MAX_KEYS + 1)}), f"more than {MAX_KEYS} keys"),
        ('{"": "v"}', "keys must be"),
        ("{" + " " * 9000 + "}", "longer than"),
    ],
)
def test_malformed_is_400(value: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_metadata(value)
    assert err.value.status == 400
    assert message in err.value.message
    assert err.value.param == "x-tfy-metadata"
