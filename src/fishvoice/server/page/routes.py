"""The page at `/`: talk to the assistant live in a browser, over the realtime WebSocket (/v1/realtime).

Plain HTML, JavaScript and CSS shipped in the package (server/page/static/), served as they are: no build
step, and nothing fetched from elsewhere (the Content-Security-Policy allows this origin only). The page
and its assets need no key; the routes it calls do, and the page asks for one when the server wants it.

Internal: not part of fishvoice's public surface (see fishvoice/__init__.py).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# This origin only: scripts, styles, the worklet, the WebSocket ('self' covers ws:/wss: to the same host).
# blob: plays back a recorded voice sample before it is saved.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'self'; form-action 'none'"
)


def static_files() -> dict[str, bytes]:
    """The page's files by name (index.html and its assets), read once from the package."""
    folder = resources.files("fishvoice.server.page") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in _TYPES)
    }


def _response(name: str, body: bytes) -> Response:
    suffix = name[name.rfind(".") :]
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # The files change only with the package: a reload after an upgrade must not mix old and new.
        "Cache-Control": "no-cache",
    }
    return Response(body, media_type=_TYPES[suffix], headers=headers)


def build_page_router() -> APIRouter:
    """`GET /` (the page) and `GET /static/{name}` (its scripts and styles); any other name is a 404."""
    files = static_files()
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def page() -> Response:
        return _response("index.html", files["index.html"])

    @router.api_route("/static/{name}", methods=["GET", "HEAD"])
    async def asset(name: str) -> Response:
        body = files.get(name)
        if body is None or name == "index.html":
            raise HTTPException(404, f"no static file {name!r}")
        return _response(name, body)

    return router
