import json

import pytest
from pydantic import BaseModel

from worker.records import DecodeFailure, InputDecoder, RecordMeta, dlq_headers, encode_output


class Item(BaseModel):
    id: str
    n: int


@pytest.mark.parametrize("key,value,reason", [
    (b"k", None, "empty"),
    (b"k", b"", "empty"),
    (b"k", b"x" * 10_001, "oversized"),
    (b"k", b"\xff", "invalid-utf8"),
    (b"k", b"{nope", "invalid-json"),
    (b"k", ("[" * 100 + "]" * 100).encode(), "too-deep"),
    (None, b'{"id": "1", "n": 1}', "null-key"),
    (b"k", b'{"id": "1", "n": "many"}', "schema-invalid"),
    (b"k", b'{"id": "1", "n": 1' + b"0" * 5000 + b"}", "invalid-json"),  # int() refuses > 4300 digits
    (b"k", b'{"id": "1", "n": NaN}', "invalid-json"),
    (b"k", b'{"id": "1", "n": -Infinity}', "invalid-json"),
    (b"k", b'{"id": "\\ud800", "n": 1}', "invalid-utf8"),  # half a surrogate pair: no UTF-8 form
])
def test_bad_inputs_have_reasons(key, value, reason):
    decoder = InputDecoder(Item, max_bytes=10_000)
    with pytest.raises(DecodeFailure) as info:
        decoder.decode(key, value)
    assert info.value.reason == reason


def test_key_field_and_model():
    decoder = InputDecoder(Item, max_bytes=100, key_field="id")
    key, value = decoder.decode(None, b'{"id": "7", "n": 3}')
    assert key == b"7" and value == Item(id="7", n=3)
    assert json.loads(encode_output(value)) == {"id": "7", "n": 3}


def test_escaped_surrogate_pairs_and_escaped_backslashes_are_fine():
    decoder = InputDecoder(None, max_bytes=100)
    assert decoder.decode(b"k", b'{"s": "\\ud83d\\ude00"}')[1] == {"s": "\U0001f600"}
    assert decoder.decode(b"k", b'{"s": "\\\\ud800"}')[1] == {"s": "\\ud800"}


def test_dlq_headers_truncate():
    headers = dict(dlq_headers(RecordMeta("t", 1, 2, 0, b"k"), "app", "txn", "run-failed", ValueError("x" * 5000)))
    assert len(headers["agentfleet.dlq.error"]) == 1024
    assert headers["agentfleet.dlq.reason"] == b"run-failed"
    assert headers["agentfleet.source.offset"] == b"2"
    assert headers["agentfleet.source.topic"] == b"t"


def test_dlq_error_header_is_cut_in_bytes_on_a_character_boundary():
    meta = RecordMeta("t", 1, 2, 0, b"k")
    error = dict(dlq_headers(meta, "app", "txn", "run-failed", ValueError("é" * 5000)))["agentfleet.dlq.error"]
    assert len(error) <= 1024 and error.endswith(b"...")
    assert error.decode("utf-8") == "é" * ((1024 - 3) // 2) + "..."
    # Error text may carry lone surrogates (from undecodable input): escaped, never a crash.
    escaped = dict(dlq_headers(meta, "app", "txn", "run-failed", ValueError("bad \udcff")))["agentfleet.dlq.error"]
    assert escaped == b"bad \\udcff"
