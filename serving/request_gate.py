"""What POST /predict accepts before anything parses it, and the one shape of its errors.

An ASGI middleware: a body that is not application/json gets a 415 and one above serving.max_request_bytes a
413, without being read past the limit or parsed. Every error of /predict, BentoML's 400s included (a
list for its own exceptions, pydantic's error list for a bad field), leaves as one object
{"error", "field", "detail"} with one log line."""

from __future__ import annotations

import json
import logging

from scoutless.params import ServingParams

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = ServingParams().max_request_bytes
# Set by the service from its models' serving config (serving.max_request_bytes) when it starts.
LIMITS = {"max_request_bytes": DEFAULT_MAX_BYTES}
GATED = {"/predict"}


def error_body(error: str, field: str | None, detail: str) -> bytes:
    return json.dumps({"error": error, "field": field, "detail": detail}).encode()


class RequestGate:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
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

        await self.app(scope, replay, _errors_as_one_object(send, scope))

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


def _errors_as_one_object(send, scope):
    """`send`, with a 4xx/5xx response's body rewritten as the service's error object (and logged once)."""
    held: dict = {}

    async def sending(message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held["start"], held["body"] = message, bytearray()
            return
        if "start" not in held:
            await send(message)
            return
        held["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        status = held["start"]["status"]
        error = one_error(status, bytes(held["body"]))
        log.warning("refused %s %s: %s %s%s", scope["method"], scope["path"], status,
                    f"{error['field']}: " if error["field"] else "", error["detail"])
        payload = json.dumps(error).encode()
        headers = [(name, value) for name, value in held["start"]["headers"]
                   if name.lower() not in (b"content-length", b"content-type")]
        await send({**held["start"], "headers": [*headers, (b"content-type", b"application/json"),
                                                 (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    return sending
