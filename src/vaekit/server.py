"""``vaekit serve RUN_DIR [RUN_B]``: the explorer as a local web app (Starlette on uvicorn).

The page and its script ship inside the package (``vaekit/web/``) and are served from a fixed list,
so nothing comes from the internet and no path from a request reaches the disk, except the run
folder's own files, which are resolved and kept inside the folder.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import stat
from pathlib import Path
from typing import Any, Callable

from .checkpoint import load_config
from .data import reads_files
from .errors import VaekitError, as_text, line_sink, whole_number
from .explore import Explorer, RequestError
from .files import read_regular
from .samplers import DEFAULT_COMPONENTS, check_sampler

WEB_DIR = Path(__file__).with_name("web")
ASSETS = {"": ("index.html", "text/html; charset=utf-8"),
          "explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
          "explorer.css": ("explorer.css", "text/css; charset=utf-8")}
RUN_FILE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".json": "application/json",
                  ".jsonl": "application/json", ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                  ".csv": "text/plain; charset=utf-8"}
MAX_BODY = 64 * 1024  # the largest request body: a code of a few thousand numbers
MAX_RUN_FILE = 64 * 1024 * 1024
HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
MAX_SERVED = 64 << 20  # a run's plots, JSON and text are far smaller


def _need_web_stack() -> None:
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise VaekitError(f"vaekit serve needs the web extra ({missing[0]} is missing): pip install -e '.[serve]'")


def create_app(explorers: list[Explorer], host: str = "127.0.0.1") -> Any:
    """The Starlette app over loaded runs (``explorers[i]`` answers under /api/i/). Requests must name
    this machine (or ``host``) in their Host header, so a web page cannot reach the explorer through
    a rebound DNS name."""
    _need_web_stack()
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse as _StarletteJSON
    from starlette.responses import Response

    class JSONResponse(_StarletteJSON):
        """Strict JSON whose strings are text: a file name's stray bytes (run, class and data names
        come from the disk) become U+FFFD instead of failing the response."""

        def render(self, content: Any) -> bytes:
            return as_text(json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))).encode()
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=HEADERS)

    def explorer_of(request: Request) -> Explorer:
        r = request.path_params["run"]
        if not r.isdigit() or int(r) >= len(explorers):
            raise RequestError(f"run {r[:20]}: this server has runs 0..{len(explorers) - 1}")
        return explorers[int(r)]

    async def body(request: Request) -> dict[str, Any]:
        """The JSON object a request sends, read no further than MAX_BODY bytes (a client that streams
        gigabytes is answered when it passes the limit, not held in memory)."""
        declared = request.headers.get("content-length", "")
        too_big = f"request body: more than the {MAX_BODY:,} bytes allowed"
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise RequestError(too_big)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise RequestError(too_big)
        try:
            value = json.loads(bytes(raw) or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"request body: not JSON ({e})") from None
        if not isinstance(value, dict):
            raise RequestError("request body: expected a JSON object")
        return value

    def api(answer: Callable[[Explorer, dict[str, Any]], Any], post: bool = True) -> Callable:
        async def endpoint(request: Request) -> Response:
            try:
                args = await body(request) if post else dict(request.query_params)
                result = answer(explorer_of(request), args)
            except RequestError as e:
                return error(400, str(e))
            return JSONResponse(result, headers=HEADERS)
        return endpoint

    def field(args: dict[str, Any], name: str, default: Any = ...) -> Any:
        if name not in args:
            if default is ...:
                raise RequestError(f"{name}: missing from the request")
            return default
        return args[name]

    async def asset(request: Request) -> Response:
        name = request.path_params.get("name", "")
        if name not in ASSETS:
            return error(404, f"/{name[:60]}: no such page")
        file, media = ASSETS[name]
        return Response((WEB_DIR / file).read_bytes(), media_type=media, headers=HEADERS)

    async def runs(request: Request) -> Response:
        return JSONResponse([e.info() for e in explorers], headers=HEADERS)

    async def run_file(request: Request) -> Response:
        try:
            e = explorer_of(request)
        except RequestError as err:
            return error(404, str(err))
        found = _inside(e.path, request.path_params["path"])
        if isinstance(found, str):
            return error(404, found)
        try:
            body = read_regular(found, "run file", MAX_SERVED)
        except VaekitError as err:  # replaced since it was checked, or too large to serve
            return error(404, str(err))
        return Response(body, media_type=RUN_FILE_TYPES[found.suffix.lower()], headers=HEADERS)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        reason = "method not allowed here" if exc.status_code == 405 else "no such page"
        return error(exc.status_code, f"{request.method} {request.url.path[:80]}: {reason}")

    async def failed(request: Request, exc: Exception) -> Response:
        return error(500, f"{request.url.path[:80]}: the server failed ({type(exc).__name__}: {str(exc)[:200]})")

    routes = [
        Route("/", asset),
        Route("/api/runs", runs),
        Route("/api/{run}/map", api(lambda e, a: e.map_points(), post=False)),
        Route("/api/{run}/curves", api(lambda e, a: e.curves(), post=False)),
        Route("/api/{run}/decode_map", api(lambda e, a: e.decode_map(field(a, "u"), field(a, "v"), field(a, "label", None))),
              methods=["POST"]),
        Route("/api/{run}/decode", api(lambda e, a: e.decode(field(a, "code"), field(a, "label", None))),
              methods=["POST"]),
        Route("/api/{run}/example", api(lambda e, a: e.example(field(a, "index"))), methods=["POST"]),
        Route("/api/{run}/interpolate", api(lambda e, a: e.interpolate(
            field(a, "a"), field(a, "b"), field(a, "steps", 8), field(a, "mode", "linear"))), methods=["POST"]),
        Route("/api/{run}/samples", api(lambda e, a: e.samples(field(a, "n", 16), field(a, "seed", 0),
                                                              field(a, "label", None), field(a, "sampler", "prior"))),
              methods=["POST"]),
        Route("/runs/{run}/{path:path}", run_file),
        Route("/{name}", asset),
    ]
    hosts = ["*"] if host in ("0.0.0.0", "::", "") else ["127.0.0.1", "localhost", "::1", "[::1]", "testserver", host]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: failed},
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


def _inside(root: Path, relative: str) -> Path | str:
    """The run folder's file at ``relative``, or why it is not served (outside, hidden, not a file)."""
    parts = Path(relative).parts
    if not relative or any(p.startswith(".") for p in parts) or Path(relative).is_absolute():
        return f"{relative[:80]}: not a file of this run"
    base = root.resolve()
    path = (base / relative).resolve()
    if path == base or base not in path.parents:
        return f"{relative[:80]}: outside the run folder"
    if path.suffix.lower() not in RUN_FILE_TYPES:
        return f"{relative[:80]}: only {', '.join(sorted(RUN_FILE_TYPES))} files are served"
    try:
        st = path.stat()
    except OSError:
        return f"{relative[:80]}: no such file in the run folder"
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RUN_FILE:
        return f"{relative[:80]}: not a regular file of at most {MAX_RUN_FILE >> 20} MB"
    return path


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, opened before any model loads so a taken port fails at once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise VaekitError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise VaekitError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                          "choose another --port (0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _data_dirs(run_dirs: list[str | Path], data_dir: str | None) -> list[str | None]:
    """``data_dir`` for each of two runs whose data are read from files, None for built-in data; one
    run gets it as given (so that a flag no run can use is refused, as for every command)."""
    if data_dir is None or len(run_dirs) == 1:
        return [data_dir] * len(run_dirs)
    reads = [reads_files(load_config(d).data) for d in run_dirs]
    return [data_dir if r else None for r in reads] if any(reads) else [data_dir] * len(run_dirs)


def serve(run_dirs: str | Path | list[str | Path], host: str = "127.0.0.1", port: int = 8000,
          data_dir: str | None = None, log: Callable[[str], None] = print, sampler: str = "prior",
          components: int = DEFAULT_COMPONENTS, device: str = "cpu") -> None:
    """Load the runs (one, or a list of two to compare) and answer the explorer's page until interrupted
    (Ctrl+C). ``sampler="gmm"`` fits each run's Gaussian mixture first where the run folder has none (a
    saved one is always offered)."""
    _need_web_stack()
    import uvicorn

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]

    if not 1 <= len(run_dirs) <= 2:
        raise VaekitError(f"vaekit serve takes one run folder, or two to compare; got {len(run_dirs)}")
    port, log = whole_number(port, "--port"), line_sink(log)
    check_sampler(sampler, components)
    sock = bind(host, port)
    try:
        dirs = _data_dirs(run_dirs, data_dir)
        explorers = [Explorer(d, dd, device, sampler=sampler, components=components, log=log)
                     for d, dd in zip(run_dirs, dirs)]
        for e in explorers:
            e.map_points()  # the codes are computed before the first visitor waits for them
        app = create_app(explorers, host)
        actual = sock.getsockname()[1]
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # a URL a browser elsewhere opens
        shown = f"[{shown}]" if ":" in shown else shown
        if host not in ("127.0.0.1", "localhost", "::1"):
            log(f"note: --host {host} makes the explorer reachable from other machines on the network")
        log(f"vaekit serve: http://{shown}:{actual}/ ({', '.join(str(d) for d in run_dirs)}); Ctrl+C stops")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[sock])
    finally:
        sock.close()
