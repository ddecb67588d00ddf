"""serve's OpenAPI schema, fuzzed in-process (schemathesis over the ASGI app): no endpoint answers 500 or crashes,
whatever the generated paths, query values and uploads (NUL bytes, very long names, odd report paths), valid
by the schema or not."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from pipeline.serving.request_log import LOG_DIR, RequestLog
from pipeline.serving.serve import create_app
from tests._trained import SEED

# Every operation of the app (test_every_operation_is_fuzzed keeps this list complete). Examples per operation
# and mode are bounded: the whole file stays within seconds.
OPERATIONS = [("/", "GET"), ("/models", "GET"), ("/predict", "POST"), ("/samples/{index}.png", "GET"),
              ("/report", "GET"), ("/reports/{path}", "GET")]
EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(trained, fmnist, tmp_path_factory):
    # schemathesis.pytest.from_fixture + @schema.parametrize() would be the idiom, but schemathesis 4.32 reads
    # pytest's private Function._nodeid, which pytest 9 no longer has: the strategies are driven by hand instead.
    root = tmp_path_factory.mktemp("fuzz-registry")   # no champion: the most accurate model answers by default
    app = create_app(trained / "models", trained / "metrics", trained / "reports", seed=SEED,
                     max_upload_bytes=200_000, test_images=fmnist["test"][0][:10], registry_root=root,
                     request_log=RequestLog(root / LOG_DIR, max_rows=1000))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema):
    found = {(op.ok().path, op.ok().method.upper()) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_endpoint_answers_500(api_schema, path, method):
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(checks=[not_a_server_error])

    fuzz()


@pytest.mark.parametrize("url", ["/reports/a%00b.md", "/reports/" + "x" * 300 + ".md", "/reports/" + "a/" * 3000,
                                 "/reports/%2e%2e/%2e%2e/etc/passwd", "/samples/99999999999999999999999.png"])
def test_odd_report_and_sample_paths_are_404(api_schema, url):
    from fastapi.testclient import TestClient

    assert TestClient(api_schema.app).get(url).status_code == 404


@pytest.mark.parametrize("model", ["a\0b", "m" * 20_000, "../../etc/passwd"])
def test_odd_model_names_are_404_with_a_short_message(api_schema, model, fmnist):
    from fastapi.testclient import TestClient

    from tests.test_predict import png_bytes

    reply = TestClient(api_schema.app).post("/predict", params={"model": model},
                                            files={"file": ("x.png", png_bytes(fmnist["test"][0][0]), "image/png")})
    assert reply.status_code == 404 and len(reply.json()["detail"]) < 400, reply.text[:300]
