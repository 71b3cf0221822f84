"""`/openapi.json` and `/docs` of a real server: a valid OpenAPI document (checked by
openapi-spec-validator) in which every route that reads a body says what the body is."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from openapi_spec_validator import validate

from tests.servers import server

pytestmark = pytest.mark.model  # loads models (or starts a server that does)

BODIES = {
    ("post", "/run"): "application/json",
    ("post", "/runsync"): "application/json",
    ("post", "/v2/{endpoint_id}/run"): "application/json",
    ("post", "/v1/tts"): "application/msgpack",
    ("post", "/v1/audio/speech"): "application/json",
    ("post", "/v1/audio/transcriptions"): "multipart/form-data",
    ("post", "/v1/chat/completions"): "application/json",
    ("post", "/v1/references/add"): "multipart/form-data",
    ("post", "/v1/references/update"): "multipart/form-data",
    ("delete", "/v1/references/delete"): "multipart/form-data",
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Iterator[dict]:
    with server(tmp_path_factory.mktemp("openapi")) as base:
        yield httpx.get(f"{base}/openapi.json", timeout=30).json() | {"docs": httpx.get(f"{base}/docs").text}


def test_the_schema_is_a_valid_openapi_document(spec):
    validate({name: value for name, value in spec.items() if name != "docs"})


def test_every_route_that_reads_a_body_describes_it(spec):
    for (method, path), media in BODIES.items():
        content = spec["paths"][path][method]["requestBody"]["content"]
        assert media in content, (method, path, list(content))
    job_input = spec["components"]["schemas"]["ReplyRequest"]["properties"]
    assert {"message", "system_message", "conversation_id", "audio_format"} <= set(job_input)
    assert "voice" in spec["components"]["schemas"]["SpeechRequest"]["properties"]
    assert "references" in spec["components"]["schemas"]["FishTTSRequest"]["properties"]


def test_the_endpoint_id_of_runpods_paths_is_a_parameter(spec):
    parameters = spec["paths"]["/v2/{endpoint_id}/runsync"]["post"]["parameters"]
    assert {"name": "endpoint_id", "in": "path"}.items() <= next(
        p for p in parameters if p["name"] == "endpoint_id"
    ).items()


def test_docs_page_loads(spec):
    assert "swagger-ui" in spec["docs"] and "/openapi.json" in spec["docs"]


def test_every_route_says_what_it_answers_and_its_errors(spec):
    for path, operations in spec["paths"].items():
        error = "OpenAIErrorBody" if path.startswith(("/v1/", "/model", "/dev/")) else "ErrorBody"
        for method, operation in operations.items():
            for status in ("4XX", "5XX"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/" + error), (method, path, status, schema)
    job = spec["paths"]["/runsync"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert job["$ref"].endswith("/JobAnswer")
    assert {"id", "status", "output", "error"} <= set(spec["components"]["schemas"]["JobAnswer"]["properties"])
    speech = spec["paths"]["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert {"audio/mpeg", "audio/wav", "audio/pcm", "text/event-stream"} <= set(speech)
    assert {"audio/wav", "audio/mpeg"} <= set(spec["paths"]["/v1/tts"]["post"]["responses"]["200"]["content"])
    assert "text/event-stream" in spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
