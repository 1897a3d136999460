"""The service at three levels: the class called directly, its ASGI app through a test client, and a
real `scoutless serve` (bentoml serve) process answering HTTP on a free port."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from scoutless.params import TARGETS, JediParams, Params
from scoutless.serving.registry import ACCESS_LOG_ENV
from scoutless.serving.schema import TaskSpec
from tests.conftest import REPO, free_port, wait_until_answers

pytestmark = pytest.mark.slow

EXAMPLE = json.loads((REPO / "examples" / "task.json").read_text())
EXAMPLE_PRESET = EXAMPLE["tasks"][0]["cpuefficiency"]
MINIMAL = {"taskname": "mc23_13p6TeV.601229.PhPy8EG_A14_ttbar.simul.HITS.e8514_s4162", "prodsourcelabel": "managed",
           "processingtype": "simul", "corecount": 8, "total_nfiles": 10, "total_nevents": 10000}
# (body, status, words the error must contain)
BAD_INPUTS = [
    ('{"tasks": [', 400, ["json"]),
    ('{"tasks": [{"prodsourcelabel": "managed", "processingtype": "simul", "corecount": 8, "total_nfiles": 1, '
     '"total_nevents": 5}]}', 400, ["taskname", "required"]),
    (json.dumps({"tasks": [{**MINIMAL, "corecount": "eight"}]}), 400, ["corecount"]),
    (json.dumps({"tasks": [{**MINIMAL, "total_nevents": -5}]}), 400, ["total_nevents"]),
    (json.dumps({"tasks": [{k: v for k, v in MINIMAL.items() if k != "total_nfiles"}]}), 400, ["total_nfiles"]),
    (json.dumps({"tasks": []}), 400, ["tasks", "empty"]),
    (json.dumps({"tasks": [MINIMAL] * 1001}), 400, ["tasks", "batch limit"]),
    (json.dumps({"tasks": [{**MINIMAL, "total_nevents": False}]}), 400, ["total_nevents", "boolean"]),
    (json.dumps({"tasks": [{**MINIMAL, "total_nevents": 10**30}]}), 400, ["total_nevents"]),
    (json.dumps({"tasks": [{**MINIMAL, "corecount": 2**63}]}), 400, ["corecount"]),
    (json.dumps({"tasks": [{**MINIMAL, "corecount": 300}]}), 400, ["corecount", "max_corecount"]),
    (json.dumps({"tasks": [{**MINIMAL, "corecount": "8"}]}), 400, ["corecount", "integer"]),   # text: not a count
    (json.dumps({"tasks": [{**MINIMAL, "total_nfiles": 10.5}]}), 400, ["total_nfiles", "integer"]),
    (json.dumps({"tasks": [{**MINIMAL, "creationdate": 1700000000}]}), 400, ["creationdate", "iso 8601"]),
    (json.dumps({"tasks": [{**MINIMAL, "failed_ramcount": 0}]}), 400, ["failed_ramcount", "greater than or equal"]),
    (json.dumps({"tasks": [{**MINIMAL, "failed_ramcount": "2000"}]}), 400, ["failed_ramcount", "number"]),
]
# (content type, body): refused with a 415 before the body is parsed
# Schemathesis's coverage phase (every field's boundary values) sends some 250 requests more, about two minutes
# at today's answer time; it passes too when run by hand (`st run URL/docs.json --checks all`)
SCHEMATHESIS_PHASES = "examples,fuzzing"
NOT_JSON = [("text/plain", json.dumps({"tasks": [MINIMAL]})), (None, json.dumps({"tasks": [MINIMAL]})),
            ("multipart/form-data", "--x\r\n"), ("application/x-www-form-urlencoded", "tasks=1")]


def check_answer(body: dict, presets: list[float | None]) -> None:
    """`presets`: each task's cpuefficiency as submitted (None: not given)."""
    assert body["model_version"].startswith("scoutless-")
    assert len(body["predictions"]) == len(presets)
    for prediction, preset in zip(body["predictions"], presets, strict=True):
        for target in TARGETS:
            values = prediction[target]
            assert values["q50"] <= values["q90"] <= values["q95"]
            if target == "cpuefficiency":
                # the efficiency the served cputime is expressed with: the task's preset, else JEDI's default
                assert values["request"] == (preset or JediParams().cpuefficiency_if_null)
                assert values["expected_job_failure"] is None
            else:
                # a job-level request by the configured policy, with the share of the jobs expected above it
                assert values["request"] > 0 and values["request_policy"] == Params().request.policy
                assert 0 < values["expected_job_failure"] <= 0.5 and values["retry"] is None
        assert prediction["iointensity"]["class"] in ("low", "high")
        assert prediction["ramcount"]["unit"] == "MBPerCore" and prediction["cputime"]["unit"] == "HS06sPerEvent"


@pytest.fixture(scope="module")
def service_class(served_project):
    from scoutless.serving.service import Scoutless

    return Scoutless


def test_the_service_class_answers_directly(service_class):
    service = service_class()
    tasks = [TaskSpec(**EXAMPLE["tasks"][0]), TaskSpec(**MINIMAL)]
    body = asyncio.run(service.predict(tasks)).model_dump()   # the response model, dumped as the service sends it
    check_answer(body, [EXAMPLE_PRESET, None])
    assert body["predictions"][0]["jeditaskid"] == EXAMPLE["tasks"][0]["jeditaskid"]
    assert set(service.metadata()["targets"]) == set(TARGETS)


def test_unknown_categories_still_get_a_prediction(service_class):
    novel = TaskSpec(**{**MINIMAL, "processingtype": "quantum-sim", "transhome": "NewFramework-99.1.2",
                        "transpath": "Never_tf.py", "campaign": "MC99"})
    check_answer(asyncio.run(service_class().predict([novel])).model_dump(), [None])


@pytest.fixture(scope="module")
def client(service_class):
    from starlette.testclient import TestClient

    with TestClient(service_class.to_asgi()) as test_client:
        yield test_client


def test_the_asgi_app_answers_the_readme_example(client):
    response = client.post("/predict", json=EXAMPLE)
    assert response.status_code == 200, response.text
    check_answer(response.json(), [EXAMPLE_PRESET])
    assert client.get("/metadata/").json()["targets"]["ramcount"]["unit"] == "MBPerCore"


def test_the_values_of_a_parameter_map_are_those_the_task_was_submitted_with(client):
    """A row changed after submission, sent with its parameter map (an object or its JSON text), gets the
    answer of the row as submitted; without the map it would not."""
    submitted = EXAMPLE["tasks"][0]
    changed = {**submitted, "corecount": 8, "cpuefficiency": 40, "basewalltime": 3000, "baseramcount": 2000}
    parameter_map = {"coreCount": submitted["corecount"], "cpuEfficiency": submitted["cpuefficiency"],
                     "baseWalltime": submitted["basewalltime"], "baseRamCount": submitted["baseramcount"]}

    def answer(task: dict) -> dict:
        response = client.post("/predict", json={"tasks": [task]})
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    expected = answer(submitted)
    assert answer({**changed, "taskparams": parameter_map}) == expected
    assert answer({**changed, "taskparams": json.dumps(parameter_map)}) == expected
    assert answer(changed)["cpuefficiency"]["request"] == 40 != expected["cpuefficiency"]["request"]


def test_a_job_out_of_memory_gets_the_memory_to_ask_next(client):
    """Given the ramcount a job of the task ran out of memory at, the answer's ramcount says what to ask next:
    above it, from the task's distribution (the chance of failing again beside it); far above everything the
    task's jobs could need, the vertical pod autoscaler's +20 %."""
    def ramcount(task: dict) -> dict:
        response = client.post("/predict", json={"tasks": [task]})
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["ramcount"]

    first = ramcount(MINIMAL)
    retry = ramcount({**MINIMAL, "failed_ramcount": first["request"]})["retry"]
    assert retry["failed_at"] == first["request"] < retry["request"] and retry["rule"] == "predictive"
    assert 0 < retry["expected_job_failure"] < 1
    beyond = ramcount({**MINIMAL, "failed_ramcount": 10**6})["retry"]
    assert beyond == {"failed_at": 10**6, "request": 1.2 * 10**6, "expected_job_failure": None, "rule": "vpa"}
    assert ramcount({**MINIMAL, "failed_ramcount": 10**6})["request"] == first["request"]   # the task's own: unchanged


@pytest.mark.parametrize(("body", "status", "words"), BAD_INPUTS, ids=range(len(BAD_INPUTS)))
def test_the_asgi_app_refuses_bad_input_naming_the_field(client, body, status, words):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert all(word in response.text.lower() for word in words), response.text
    error = response.json()   # one object, whatever refused the request (BentoML, pydantic or the service)
    assert set(error) == {"error", "field", "detail"} and error["error"] == "invalid request", error


def test_the_answer_has_a_closed_schema_that_it_keeps(client):
    """The OpenAPI schema of a 200 names every field and allows no other; the answer sends exactly those."""
    spec = client.get("/docs.json").json()
    schemas = spec["components"]["schemas"]
    response = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    for schema in (response, *(schemas[name] for name in ("TaskPrediction", "TargetPrediction", "IOPrediction"))):
        assert schema["additionalProperties"] is False, schema["title"]
    assert "class" in schemas["IOPrediction"]["properties"]
    answer = client.post("/predict", json=EXAMPLE).json()
    assert set(answer) <= set(response["properties"])
    prediction = answer["predictions"][0]
    assert set(prediction) <= set(schemas["TaskPrediction"]["properties"])
    assert set(prediction["iointensity"]) <= set(schemas["IOPrediction"]["properties"])
    assert set(prediction["ramcount"]) <= set(schemas["TargetPrediction"]["properties"])


def test_the_openapi_declares_every_refusal_and_every_bound(client, served_project):
    """What the gate and the service enforce is in the schema a client (or a fuzzer) reads."""
    params = Params.model_validate(yaml.safe_load((served_project / "params.yaml").read_text()))
    spec = client.get("/docs.json").json()
    operation = spec["paths"]["/predict"]["post"]
    assert set(operation["responses"]) == {"200", "400", "413", "415", "500"}
    for status in ("400", "413", "415", "500"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorObject"}
    schemas = spec["components"]["schemas"]
    assert schemas["ErrorObject"]["required"] == ["error", "field", "detail"]
    assert schemas["ErrorObject"]["additionalProperties"] is False
    assert operation["requestBody"]["required"] is True
    tasks = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["tasks"]
    assert (tasks["minItems"], tasks["maxItems"]) == (1, params.serving.max_batch)
    corecount = schemas["TaskSpec"]["properties"]["corecount"]
    assert (corecount["minimum"], corecount["maximum"]) == (0, params.validation.max_corecount)
    assert schemas["TaskSpec"]["anyOf"][0]["required"] == ["total_nfiles", "total_nevents"]
    bounds = json.dumps(schemas["TaskSpec"])
    assert '"ge"' not in bounds and '"lt"' not in bounds   # pydantic's names, which no OpenAPI reader knows


def test_a_refused_request_leaves_one_log_line_of_ours(client, caplog):
    caplog.set_level(logging.WARNING, logger="scoutless.serving.request_gate")
    client.post("/predict", content=json.dumps({"tasks": [{**MINIMAL, "corecount": "eight"}]}),
                headers={"content-type": "application/json"})
    lines = [r.getMessage() for r in caplog.records if r.name == "scoutless.serving.request_gate"]
    assert len(lines) == 1 and "400 tasks.0.corecount" in lines[0], lines


@dataclass
class Server:
    url: str
    log: Path   # everything the server printed


@pytest.fixture(scope="module")
def server(served_project, tmp_path_factory) -> Iterator[Server]:
    """`scoutless serve` as an operator starts it: a real bentoml serve process on 127.0.0.1, its output in a
    file (a pipe nobody reads would stall it once full)."""
    port = free_port()
    scoutless = Path(sys.executable).with_name("scoutless")
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([str(scoutless), "serve", "--port", str(port)], cwd=served_project,
                                   env=os.environ.copy(), stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_answers(f"{url}/readyz", process, "scoutless serve", log.read_text)
    yield Server(url, log)
    # SIGTERM to the server alone, as an operator stops it: it must stop its workers itself (the session's
    # end fails the run on any process left behind)
    process.terminate()
    process.wait(timeout=60)


def test_a_real_server_answers_the_readme_example(server):
    response = httpx.post(f"{server.url}/predict", json=EXAMPLE, timeout=30)
    assert response.status_code == 200, response.text
    check_answer(response.json(), [EXAMPLE_PRESET])
    metadata = httpx.get(f"{server.url}/metadata", follow_redirects=True, timeout=10).json()
    assert {t["candidate"] for t in metadata["targets"].values()} <= {"history", "mlp", "hgb", "xgboost", "default"}


def test_the_access_log_follows_the_params(server, served_project):
    """serving.access_log, off by default: the real server writes no line per answered request; on, the service
    is defined with BentoML's access log."""
    httpx.post(f"{server.url}/predict", json=EXAMPLE, timeout=30).raise_for_status()
    assert "path=/predict" not in server.log.read_text()
    shown = subprocess.run([sys.executable, "-c", "from scoutless.serving.service import Scoutless; "
                            "print(Scoutless.config['logging']['access']['enabled'])"],
                           env={**os.environ, ACCESS_LOG_ENV: "true"}, cwd=served_project, capture_output=True,
                           text=True, timeout=300)
    assert shown.stdout.split()[-1:] == ["True"], shown.stdout[-1000:] + shown.stderr[-3000:]


def test_concurrent_requests_to_a_real_server_each_get_their_own_answer(server, served_project):
    """Requests sent together are answered in batches (serving.batching): each must get the answer it gets
    alone, for its own tasks, in its own order, whatever it was batched with."""
    tasks = pd.read_parquet(served_project / "data" / "validated" / "tasks.parquet").sample(24, random_state=5)
    tasks = tasks.assign(creationdate=pd.to_datetime(tasks["creationdate"]).dt.strftime("%Y-%m-%dT%H:%M:%S"))
    tasks = tasks[[name for name in tasks if name in TaskSpec.model_fields]]
    bodies = [{"tasks": [_spec_fields(row) for row in tasks.iloc[i:i + 1 + i % 3].to_dict("records")]}
              for i in range(0, 24, 2)]
    with httpx.Client(timeout=30) as client:
        alone = [client.post(f"{server.url}/predict", json=body).json() for body in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        for _ in range(3):
            together = list(pool.map(lambda body: httpx.post(f"{server.url}/predict", json=body, timeout=30).json(),
                                     bodies))
            assert together == alone


@pytest.mark.parametrize(("body", "status", "words"), BAD_INPUTS, ids=range(len(BAD_INPUTS)))
def test_a_real_server_refuses_bad_input_and_keeps_serving(server, body, status, words):
    response = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": "application/json"},
                          timeout=30)
    assert response.status_code == status, response.text
    assert all(word in response.text.lower() for word in words), response.text
    assert httpx.post(f"{server.url}/predict", json={"tasks": [MINIMAL]}, timeout=30).status_code == 200


@pytest.mark.parametrize(("media_type", "body"), NOT_JSON, ids=[str(m) for m, _ in NOT_JSON])
def test_only_json_is_read(client, media_type, body):
    headers = {"content-type": media_type} if media_type else {}
    response = client.post("/predict", content=body.encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["field"] == "content-type" and "application/json" in response.json()["detail"]


def test_a_body_above_the_limit_is_refused_before_it_is_read(client, monkeypatch):
    from scoutless.serving import request_gate

    monkeypatch.setitem(request_gate.LIMITS, "max_request_bytes", 2000)
    body = json.dumps({"tasks": [MINIMAL] * 20}).encode()   # above 2000 bytes
    declared = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "serving.max_request_bytes=2000" in declared.json()["detail"]

    def chunks():   # no content-length: the gate counts what arrives
        yield body[:1500]
        yield body[1500:]

    streamed = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    small = client.post("/predict", json={"tasks": [MINIMAL]})
    assert small.status_code == 200, small.text


def test_a_real_server_refuses_a_huge_body_and_other_media_and_keeps_serving(server):
    huge = b'{"tasks": [' + b" " * (9 * 2**20) + b"]}"
    response = httpx.post(f"{server.url}/predict", content=huge, headers={"content-type": "application/json"},
                          timeout=30)
    assert response.status_code == 413 and response.json()["error"] == "request too large"
    response = httpx.post(f"{server.url}/predict", content=json.dumps({"tasks": [MINIMAL]}),
                          headers={"content-type": "text/plain"}, timeout=30)
    assert response.status_code == 415
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    assert httpx.post(f"{server.url}/predict", json={"tasks": [MINIMAL]}, timeout=30).status_code == 200


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    """Every operation of the OpenAPI the server publishes, fuzzed with bounded examples, every check on: no
    5xx, every answer (200s and refusals) in its declared schema, status and content type, schema-valid
    requests accepted and invalid ones refused; and the server logged each refusal as one line, without a
    traceback."""
    before = server.log.read_text()
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [str(st), "run", f"{server.url}/docs.json", "--checks", "all", "--phases", SCHEMATHESIS_PHASES,
         "--max-examples", "25", "--seed", "20261201", "--request-timeout", "60", "--no-color",
         "--generation-database", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-3000:]
    written = server.log.read_text()[len(before):]
    assert "Traceback" not in written, written[written.index("Traceback") - 500:][:4000]
    assert "refused POST /predict: 4" in written


def test_predict_command_reads_a_table_whose_count_column_has_a_gap(served_project, tmp_path):
    """In CSV a count column with an empty cell is read as floats; its whole numbers are counts again."""
    from typer.testing import CliRunner

    from scoutless.cli import app

    rows = [MINIMAL, {**MINIMAL, "baseramcount": 2000}]
    (tmp_path / "tasks.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "tasks.csv")])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["predictions"]) == 2


def test_predict_command_gives_the_same_answer_without_a_server(served_project, client, tmp_path):
    from typer.testing import CliRunner

    from scoutless.cli import app

    (tmp_path / "tasks.json").write_text(json.dumps(EXAMPLE))
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "tasks.json")])
    assert result.exit_code == 0, result.output
    offline = json.loads(result.output)["predictions"][0]
    online = client.post("/predict", json=EXAMPLE).json()["predictions"][0]
    assert offline["ramcount"]["q90"] == pytest.approx(online["ramcount"]["q90"])


def _spec_fields(row: dict) -> dict:
    """A task row read back from the archive as the fields a client sends (whole floats as counts)."""
    fields = {}
    for name, value in row.items():
        if not isinstance(value, str | dict | list) and pd.isna(value):
            continue
        fields[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return fields


def test_the_hot_path_answers_what_the_pandas_path_answers_for_the_same_models(served_project):
    """Predictor.answer (row-wise features, the snapshot's dictionaries, compiled trees, plain dicts) against
    predict_frame with the library models, on the archive's own tasks asked as created at times before, within
    and after their history, and with an out-of-memory retry: every value to 1e-6."""
    from scoutless.serving.predictor import Predictor

    root = served_project / "artifacts" / "promoted"
    compiled = Predictor.from_promoted(root, list(TARGETS))
    reference = Predictor.from_promoted(root, list(TARGETS), compiled=False)
    assert any(getattr(m.candidate, "_compiled", None) is not None for m in compiled.models)
    tasks = pd.read_parquet(served_project / "data" / "validated" / "tasks.parquet").sample(150, random_state=3)
    created = pd.to_datetime(tasks["creationdate"])
    spread = pd.to_timedelta(np.random.default_rng(3).integers(-200, 200, len(tasks)), unit="D")
    tasks = tasks.assign(creationdate=(created + spread).dt.strftime("%Y-%m-%dT%H:%M:%S"))
    specs = [TaskSpec(**_spec_fields(row), failed_ramcount=1800.0) for row in tasks.to_dict("records")]
    rows = [spec.row() for spec in specs]

    answered = compiled.answer(rows, [spec.failed_ramcount for spec in specs])["predictions"]
    expected = reference.predict_frame(pd.DataFrame(rows))
    for model in compiled.models:
        frame = expected[model.target]
        for name in ("q50", "q90", "q95", "request"):
            got = np.array([prediction[model.target][name] for prediction in answered])
            np.testing.assert_allclose(got, frame[name].to_numpy(dtype="float64"), rtol=1e-6, atol=1e-6)
        assert [p[model.target]["request_policy"] for p in answered] == frame["request_policy"].tolist()
    assert all(prediction["ramcount"]["retry"]["failed_at"] == 1800.0 for prediction in answered)
    # the response model takes the plain dicts as they are
    assert compiled.predict(specs[:3]).model_dump()["predictions"] == answered[:3]
