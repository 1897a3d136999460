"""What POST /predict accepts before anything parses it: a JSON body of at most serving.max_request_bytes.

An ASGI middleware: a body of another type gets a 415 and an oversized one a 413, each with the service's
error object and one log line, without the body being read past the limit or parsed."""

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

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, scope, status: int, error: str, field: str | None, detail: str) -> None:
        log.warning("refused %s %s: %s %s", scope["method"], scope["path"], status, detail)
        payload = error_body(error, field, detail)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
