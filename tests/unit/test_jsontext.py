"""bridge.jsontext: orjson on the hot path, written and read as the standard library's json did."""

from __future__ import annotations

import json

import pytest

from bridge import jsontext


def test_encode_writes_compact_utf8_in_insertion_order() -> None:
    value = {"title": "Zürich – Grüezi", "id": 7, "tags": ["a", None, True], "nested": {"b": 1.5, "a": 2}}
    assert jsontext.encode(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_encode_writes_what_orjson_refuses_as_json_did() -> None:
    value = {1: "int key", "big": 2**70}
    assert jsontext.encode(value) == b'{"1":"int key","big":1180591620717411303424}'


def test_encode_uses_default_and_raises_type_error_without_one() -> None:
    assert jsontext.encode({"x": {1, 2}}, default=sorted) == b'{"x":[1,2]}'
    with pytest.raises(TypeError):
        jsontext.encode({"x": object()})


def test_decode_reads_strict_json_only() -> None:
    assert jsontext.decode(b'{"a": [1, "\\u00fc"]}') == {"a": [1, "ü"]}
    for text in (b'{"a": NaN}', b"<html>", b""):
        with pytest.raises(json.JSONDecodeError):
            jsontext.decode(text)


def test_decode_reads_a_lone_surrogate_escape_as_the_replacement_character() -> None:
    # Half an emoji (its high surrogate alone), in a value and a key; a whole pair stays the emoji it encodes.
    text = b'{"title": "Harbour \\ud83d reopens", "\\udc00k": ["\\ud83d\\ude00", 1.5]}'
    assert jsontext.decode(text) == {"title": "Harbour \ufffd reopens", "\ufffdk": ["\U0001f600", 1.5]}
    assert jsontext.encode(jsontext.decode(text)).decode() == '{"title":"Harbour \ufffd reopens","\ufffdk":["😀",1.5]}'


def test_decode_still_refuses_what_is_not_json_when_it_holds_a_lone_surrogate() -> None:
    for text in (b'{"a": "\\ud83d", "b": NaN}', b'{"a": "\\ud83d",}', b'{"a": "\\ud83d"} trailing'):
        with pytest.raises(json.JSONDecodeError):
            jsontext.decode(text)
