"""What POST /predict accepts before anything parses it, the one shape of its errors, and the OpenAPI that
says both.

An ASGI middleware: a body that is not application/json gets a 415 and one above serving.max_request_bytes a
413, without being read past the limit or parsed. Every error of /predict, BentoML's 400s included (a
list for its own exceptions, pydantic's error list for a bad field), leaves as one object
{"error", "field", "detail"} with one log line. The OpenAPI document (/docs.json) is amended to declare
what the gate and the service enforce: those statuses with that object, the batch limit and the corecount
bound the models were trained within."""

from __future__ import annotations

import json
import logging

from scoutless.params import ServingParams
from scoutless.serving.schema import ErrorObject

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = ServingParams().max_request_bytes
# Set by the service from its models' serving config when it starts (max_batch, max_corecount too).
LIMITS = {"max_request_bytes": DEFAULT_MAX_BYTES}
GATED = {"/predict"}
SPEC_PATH = "/docs.json"
ERRORS = {
    400: "A field is missing, of the wrong type or out of bounds; `field` names it.",
    413: "The body is above serving.max_request_bytes; it was not read.",
    415: "The body is not application/json; it was not read.",
    500: "The service failed on a valid request.",
}


# BentoML logs every exception of an API call with its traceback, a refused request's included.
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"


class ClientErrorTracebacks(logging.Filter):
    """Drops BentoML's traceback of a request refused for its content (a pydantic ValidationError, a 4xx
    BentoML exception): the gate logs that refusal as one line. A server error keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            return False
        return not (isinstance(error, BentoMLException) and error.error_code.value < 500)


def quiet_client_error_tracebacks() -> None:
    logger = logging.getLogger(BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, ClientErrorTracebacks) for f in logger.filters):
        logger.addFilter(ClientErrorTracebacks())


def error_body(error: str, field: str | None, detail: str) -> bytes:
    return json.dumps({"error": error, "field": field, "detail": detail}).encode()


class RequestGate:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == SPEC_PATH and scope["method"] == "GET":
            await self.app(scope, receive, _rewritten(send, lambda status: status == 200, _amended_spec))
            return
        if scope["type"] != "http" or scope["path"] not in GATED or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        if media_type != "application/json":
            await self._refuse(send, scope, 415, "unsupported media type", "content-type",
                               f"send the tasks as application/json, not {media_type or 'no content type'}")
            return
        limit = LIMITS["max_request_bytes"]
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, scope, 413, "request too large", None,
                               f"the body ({declared.decode('latin-1')} bytes) is above "
                               f"serving.max_request_bytes={limit}")
            return
        # Chunked or understated bodies: read up to the limit, then hand the whole body on.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return   # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(send, scope, 413, "request too large", None,
                                   f"the body is above serving.max_request_bytes={limit}")
                return
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, _rewritten(send, lambda status: status >= 400, _one_error_logged(scope)))

    @staticmethod
    async def _refuse(send, scope, status: int, error: str, field: str | None, detail: str) -> None:
        log.warning("refused %s %s: %s %s", scope["method"], scope["path"], status, detail)
        payload = error_body(error, field, detail)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def one_error(status: int, body: bytes) -> dict:
    """BentoML's error body for `status` as the service's error object: the first problem, its field."""
    try:
        payload = json.loads(body)
    except ValueError:
        return {"error": f"HTTP {status}", "field": None, "detail": body.decode("utf-8", "replace")[:500]}
    if isinstance(payload, list):   # BentoML's own exceptions come as a one-element list
        payload = payload[0] if payload and isinstance(payload[0], dict) else {"error": str(payload)}
    problems = payload.get("detail")
    if isinstance(problems, list) and problems and isinstance(problems[0], dict):   # pydantic's errors
        first = problems[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        return {"error": "invalid request", "field": field or None, "detail": first.get("msg", "")}
    message = str(payload.get("error", ""))
    field, _, detail = message.partition(": ")   # the service's own messages start with the field
    if detail and " " not in field:
        return {"error": "invalid request", "field": field, "detail": detail}
    return {"error": "invalid request" if status < 500 else "server error", "field": None, "detail": message}


def _one_error_logged(scope):
    def rewrite(status: int, body: bytes) -> bytes:
        error = one_error(status, body)
        log.warning("refused %s %s: %s %s%s", scope["method"], scope["path"], status,
                    f"{error['field']}: " if error["field"] else "", error["detail"])
        return json.dumps(error).encode()

    return rewrite


def _amended_spec(status: int, body: bytes) -> bytes:
    spec = json.loads(body)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorObject"] = ErrorObject.model_json_schema()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorObject"}}}
    for path in GATED:
        operation = spec["paths"][path]["post"]
        operation["responses"] = {
            "200": operation["responses"]["200"],
            **{str(code): {"description": text, "content": error} for code, text in ERRORS.items()},
        }
        operation["requestBody"]["required"] = True
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        tasks = body_schema["properties"]["tasks"]
        tasks["minItems"] = 1
        if "max_batch" in LIMITS:
            tasks["maxItems"] = LIMITS["max_batch"]
    if LIMITS.get("max_corecount") is not None:
        for schema in schemas.values():
            if schema.get("title") == "TaskSpec":
                schema["properties"]["corecount"]["maximum"] = LIMITS["max_corecount"]
    return json.dumps(spec).encode()


def _rewritten(send, applies, rewrite):
    """`send`, with the body of a response whose status `applies` replaced by rewrite(status, body) (and
    sent as JSON)."""
    held: dict = {}

    async def sending(message) -> None:
        if message["type"] == "http.response.start" and applies(message["status"]):
            held["start"], held["body"] = message, bytearray()
            return
        if "start" not in held:
            await send(message)
            return
        held["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        payload = rewrite(held["start"]["status"], bytes(held["body"]))
        headers = [(name, value) for name, value in held["start"]["headers"]
                   if name.lower() not in (b"content-length", b"content-type")]
        await send({**held["start"], "headers": [*headers, (b"content-type", b"application/json"),
                                                 (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    return sending
