"""The wire protocol: the committed JSON Schema matches the code, and messages follow it."""

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from stack.protocol import MESSAGE_ADAPTER, SpeechStopMessage, chunk_message, json_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json"


def test_committed_schema_matches_the_code():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "docs/protocol.schema.json is stale: python -m stack.protocol > docs/protocol.schema.json")


def test_real_chunk_message_validates_against_the_schema(engines):
    chunk = next(engines.tts.synthesize("Hello world! How are you?"))
    msg = chunk_message(chunk.timing, chunk.audio, turn_id="t1", seq=0, text=chunk.text,
                        offset_ms=0)
    data = json.loads(msg.model_dump_json())
    jsonschema.validate(data, json_schema())
    assert data["words"] == ["Hello", "world", "How", "are", "you"]
    assert len(data["wtimes"]) == len(data["wdurations"]) == len(data["words"])
    assert data["vtimes"][0] == 0
    assert abs(sum(data["vdurations"]) - data["duration_ms"]) < 1
    assert len(json.dumps(data)) < 15_000  # fits one reliable LiveKit data packet


def test_stop_message_and_unknown_fields():
    data = SpeechStopMessage(turn_id="t1").model_dump()
    jsonschema.validate(data, json_schema())
    assert MESSAGE_ADAPTER.validate_python(data).reason == "interrupted"
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python({**data, "extra": 1})
    with pytest.raises(ValidationError):
        MESSAGE_ADAPTER.validate_python({**data, "v": 2})
