"""The raters' web app (Starlette, served by uvicorn): one image at a time, in an order drawn for each rater.

Every study URL starts with ``/s/<token>/``; a missing or wrong token is a 403 (the token is compared in constant
time) and nothing is written. What the page receives: the page itself (static, the same for every study), the
rater's position and total, and for the current and previous item an opaque per-study id, the question and the
choices. Images come by that id, stripped of every PNG chunk that could carry a name or a date, with no file
date. Conditions, set item ids, file names and ``answers.json`` never leave the server, and there are no results
over the network: the owner reads them from the database (``masquerade hitl results``).

API (JSON; bodies at most 4 KiB, else 413):

- ``POST /s/<token>/api/raters`` -> ``{"rater": id}`` a new rater, with an order drawn with OS randomness;
- ``GET /s/<token>/api/raters/<rater>`` -> the rater's state (position, total, current and previous item);
- ``POST /s/<token>/api/raters/<rater>/answers`` with ``{"item": id, "choice": text, "change": false}`` -> the new
  state; the current item, or with ``"change": true`` the previous one. A replayed or duplicate answer is a 409,
  an unknown item a 404, another rater's item a 403, a choice not offered a 400;
- ``GET /s/<token>/api/raters/<rater>/images/<item>`` -> the PNG (only for the rater's own items).
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from masquerade.errors import InputError
from masquerade.fileio import LockedError, exclusive_lock, parse_json
from masquerade.hitl.ratingset import strip_png
from masquerade.hitl.store import Refused, Study, open_study

__all__ = ["create_app", "serve", "MAX_BODY", "rater_url"]

MAX_BODY = 4096
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'",
}
_NO_STORE = {**_HEADERS, "Cache-Control": "no-store"}
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _static(name: str) -> bytes:
    return resources.files("masquerade.hitl").joinpath("static", name).read_bytes()


@functools.lru_cache(maxsize=512)
def _png(path: Path) -> bytes:
    return strip_png(path.read_bytes())


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=_NO_STORE)


class _BadBody(Refused):
    """A body that is not a JSON object: a 400 with the JSON reader's one line."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


async def _body(request: Request) -> dict[str, Any]:
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
        raise Refused(413, f"request body larger than {MAX_BODY} bytes")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > MAX_BODY:
            raise Refused(413, f"request body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Refused(415, "send JSON (Content-Type: application/json)")
    return parse_json(b"".join(chunks), where="the body", expect=dict, error=_BadBody)  # deep, huge ints: 400


def create_app(study: Study) -> Starlette:
    """The ASGI app of an open study."""
    page, script, style = _static("page.html"), _static("page.js"), _static("page.css")

    def item_json(item: str) -> dict[str, Any]:
        s = study.set_of(item)
        return {
            "id": item,
            "question": s.question,
            "type": s.question_type,
            "choices": list(s.choices),
            "unrecognisable": s.question_type == "choice",
        }

    def state_json(rater: str) -> dict[str, Any]:
        st = study.state(rater)
        prev = None
        if st["previous"] is not None:
            prev = {**item_json(st["previous"]), "answer": st["previous_choice"]}
        return {
            "position": st["position"],
            "total": st["total"],
            "current": item_json(st["current"]) if st["current"] is not None else None,
            "previous": prev,
        }

    Handler = Callable[[Request], Awaitable[Response]]

    def guarded(fn: Handler) -> Handler:
        async def run(request: Request) -> Response:
            if not study.check_token(str(request.path_params.get("token", ""))):
                return _error(403, "wrong or missing study token")
            for key in ("rater", "item"):
                if key in request.path_params and not _ID.match(str(request.path_params[key])):
                    return _error(404, f"unknown {key}")
            try:
                return await fn(request)
            except Refused as exc:
                return _error(exc.status, exc.message)

        return run

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_NO_STORE)

    async def new_rater(request: Request) -> Response:
        if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
            await _body(request)  # no body is needed; one that is sent is checked like any other
        return JSONResponse({"rater": study.new_rater()}, status_code=201, headers=_NO_STORE)

    async def state(request: Request) -> Response:
        return JSONResponse(state_json(request.path_params["rater"]), headers=_NO_STORE)

    async def answer(request: Request) -> Response:
        rater = request.path_params["rater"]
        body = await _body(request)
        item, choice, change = body.get("item"), body.get("choice"), body.get("change", False)
        if set(body) - {"item", "choice", "change"}:
            raise Refused(400, "unexpected fields; send item, choice and change")
        if not isinstance(item, str) or not isinstance(choice, str) or not isinstance(change, bool):
            raise Refused(400, "item and choice must be texts, change true or false")
        study.state(rater)  # an unknown rater is a 404 before anything else
        study.answer(rater, item, choice, change=change)
        return JSONResponse(state_json(rater), headers=_NO_STORE)

    async def image(request: Request) -> Response:
        rater, item = request.path_params["rater"], request.path_params["item"]
        study.state(rater)
        if not study.may_see(rater, item):
            raise Refused(404, "unknown item")
        return Response(
            _png(study.image_path(item)),
            media_type="image/png",
            headers={**_HEADERS, "Cache-Control": "private, max-age=86400"},
        )

    def static(body: bytes, media: str) -> Handler:
        async def send(request: Request) -> Response:
            return Response(body, media_type=media, headers={**_HEADERS, "Cache-Control": "no-cache"})

        return send

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", status_code=404, headers=_HEADERS)

    routes = [
        Route("/static/page.js", static(script, "text/javascript; charset=utf-8")),
        Route("/static/page.css", static(style, "text/css; charset=utf-8")),
        Route("/s/{token}/", guarded(index)),
        Route("/s/{token}/api/raters", guarded(new_rater), methods=["POST"]),
        Route("/s/{token}/api/raters/{rater}", guarded(state)),
        Route("/s/{token}/api/raters/{rater}/answers", guarded(answer), methods=["POST"]),
        Route("/s/{token}/api/raters/{rater}/images/{item}", guarded(image)),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found})


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        try:  # the address other machines reach: no packet is sent
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("10.255.255.255", 1))
                host = s.getsockname()[0]
        except OSError:
            host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


def rater_url(host: str, port: int, token: str) -> str:
    return f"http://{_display_host(host)}:{port}/s/{token}/"


def serve(
    sets: Sequence[str | Path],
    *,
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    out: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Serve ``sets`` to raters until interrupted; the first line given to ``out`` is the raters' URL (token
    included). ``port`` 0 takes a free one. Returns the study's counts when the server stops."""
    from masquerade.extras import require

    uvicorn = require("uvicorn")
    say = out or (lambda line: print(line, flush=True))
    with _serving(Path(db).resolve()):
        return _serve(sets, db, host, port, uvicorn, say)


@contextlib.contextmanager
def _serving(db: Path) -> Iterator[None]:
    """One server per study file: a second one would keep its own copy of each rater's place and accept answers
    the first has moved past. The lock dies with its process."""
    try:
        with exclusive_lock(db):
            yield
    except LockedError:
        raise InputError(
            f"{db}: another masquerade server is serving this study; stop it first, or use another --db"
        ) from None
    except PermissionError as exc:
        raise InputError(f"{db}: cannot lock the study's folder ({exc.strerror or exc})") from None


def _serve(
    sets: Sequence[str | Path], db: str | Path, host: str, port: int, uvicorn: Any, say: Callable[[str], None]
) -> dict[str, int]:
    study = open_study(db, sets)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it every response
        # (headers and body written apart) waits for the client's delayed ACK: 40 ms each
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
        except OSError as exc:
            sock.close()
            raise InputError(f"{host}:{port}: cannot listen there ({exc.strerror or exc})") from None
        say(rater_url(host, sock.getsockname()[1], study.token))
        n = len(study.items)
        say(f"serving {n} items from {len(study.sets)} rating set(s); answers go to {study.path}; Ctrl-C stops")
        if host not in ("127.0.0.1", "::1", "localhost"):
            say("anyone on the network with this URL can rate: share it only with your raters")
        config = uvicorn.Config(
            create_app(study), log_level="warning", access_log=False, lifespan="off", server_header=False
        )
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then passes it on: done
            pass
        return study.counts()
    finally:
        study.close()
        sys.stdout.flush()
