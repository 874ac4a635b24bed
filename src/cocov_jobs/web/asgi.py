"""The base of our ASGI middlewares: each looks at the start of every HTTP response."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ResponseStartMiddleware:
    """Calls :meth:`response_started` with each HTTP response's start message (status and
    headers, still changeable) before it is sent; :meth:`handle` may wrap the whole call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.response_started(scope, message)
            await send(message)

        await self.handle(scope, receive, watched)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def response_started(self, scope: Scope, message: Message) -> None:
        """Override: see (or change) the response about to start."""
