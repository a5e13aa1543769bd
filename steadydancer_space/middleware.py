"""ASGI middlewares for what Gradio's public API cannot do: see a cancel before Gradio handles it (a cancel sent
before its job reached the server names no event, and Gradio would let that job run unseen), and complete raw HTTP
calls written for an endpoint's shorter parameter list (Gradio refuses them before any handler, with no message)."""

import json
import re

MAX_INSPECTED_BODY = 1024 * 1024  # request bodies read by the middlewares below; larger ones pass unread
MAX_SESSION_CHARS = 128


async def _read_json_body(receive) -> tuple[list, object]:
    """The request's ASGI messages (to replay) and its JSON body (None when too large, not JSON or incomplete)."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body") or size > MAX_INSPECTED_BODY:
            break
    if size > MAX_INSPECTED_BODY or messages[-1]["type"] != "http.request" or messages[-1].get("more_body"):
        return messages, None
    try:
        return messages, json.loads(b"".join(m.get("body", b"") for m in messages))
    except ValueError:
        return messages, None


def _replay(messages: list, receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


def _is_post_to(scope, pattern: "re.Pattern") -> "re.Match | None":
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    return pattern.search(scope["path"].rstrip("/"))


class CancelListener:
    """ASGI middleware that sees every POST to Gradio's `/cancel` route (the browser's Cancel button and
    `gradio_client`'s `job.cancel()` both send one) and offers it to `on_cancel(session_hash, fn_index, event_id)`
    first; `event_id` is None when the client did not know its event yet (it cancelled before submitting).

    When `on_cancel` returns True the cancel is answered here and never reaches Gradio: Gradio's own cancel stops
    every running task of the session and function (all the jobs of one `Client`, not only the one named), drops a
    queued event whichever session names it, and ends the named job with an empty result the client cannot read.
    Cancels `on_cancel` declines reach Gradio unchanged.
    """

    PATH = re.compile(r"/cancel$")
    ANSWER = json.dumps({"success": True}).encode()

    def __init__(self, app, on_cancel):
        self.app, self.on_cancel = app, on_cancel

    async def __call__(self, scope, receive, send):
        if not _is_post_to(scope, self.PATH):
            return await self.app(scope, receive, send)
        messages, body = await _read_json_body(receive)
        session = body.get("session_hash") if isinstance(body, dict) else None
        if isinstance(session, str) and 0 < len(session) <= MAX_SESSION_CHARS:  # Gradio's are short random ids
            event_id, fn_index = body.get("event_id"), body.get("fn_index")
            event_id = event_id if isinstance(event_id, str) and 0 < len(event_id) <= MAX_SESSION_CHARS else None
            fn_index = fn_index if isinstance(fn_index, int) and not isinstance(fn_index, bool) else None
            if self.on_cancel(session, fn_index, event_id):
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(self.ANSWER)).encode())]})
                await send({"type": "http.response.body", "body": self.ANSWER})
                return
        await self.app(scope, _replay(messages, receive), send)


class MissingArgumentDefaults:
    """ASGI middleware that completes calls sending fewer values than an endpoint takes: the missing trailing values
    are the endpoint's defaults, `defaults(api_name or fn_index)` (None: leave the call alone).

    Parameters are added at the end of an endpoint's list; `gradio_client` fills them in, but a raw HTTP call
    (`curl .../call/animate`) written for the shorter list would otherwise fail inside Gradio, before any handler,
    with no message. Routes: `/call/<name>`, `/call/v2/<name>`, `/run/<name>`, `/api/<name>`, `/queue/join`.
    """

    PATH = re.compile(r"/(?:call(?:/v2)?|run|api)/(?P<api_name>[\w-]+)$|/queue/join$")

    def __init__(self, app, defaults):
        self.app, self.defaults = app, defaults

    async def __call__(self, scope, receive, send):
        match = _is_post_to(scope, self.PATH)
        if not match:
            return await self.app(scope, receive, send)
        messages, body = await _read_json_body(receive)
        data = body.get("data") if isinstance(body, dict) else None
        key = match["api_name"] or (body.get("fn_index") if isinstance(body, dict) else None)
        fill = self.defaults(key) if isinstance(data, list) and key is not None else None
        if fill and len(data) < len(fill):
            raw = json.dumps({**body, "data": data + list(fill[len(data):])}).encode()
            messages = [{"type": "http.request", "body": raw, "more_body": False}]
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            scope = {**scope, "headers": headers + [(b"content-length", str(len(raw)).encode())]}
        await self.app(scope, _replay(messages, receive), send)
