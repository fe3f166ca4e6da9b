"""The ``seas gallery`` web server: a generated folder as a page, and the curation file.

The server uses the standard library only (``http.server``). It answers:

=========================  =====================================================================
``GET /``                  the page (``static/index.html``); ``/static/<name>`` its script and style
``GET /api/catalog``       the folder as JSON: every manifest row, the real training pairs of each
                           kind, the quality-control score names, the decisions so far
``GET /api/curation``      the decisions only (a second tab polls it)
``GET /file?path=<p>``     one image, where ``<p>`` is a path the catalog handed out
``POST /api/decision``     ``{"key": "<kind>/<index>", "decision": "accepted"|"rejected"|"undecided"}``
=========================  =====================================================================

Files: the browser names a file by the path text the catalog gave it, and the server looks the
text up in the catalog; it never opens a path because the browser sent it. A manifest path
(relative) is served only when, resolved (symbolic links followed), it lies inside the
generated folder; a reference or real training image (absolute, from the manifest or the
run's split) only when it is listed there; and only image files. Anything else is
403 (listed but refused) or 404 (not listed).

Curation file ``curation.json`` beside ``manifest.jsonl``::

    {"format": "seas-curation-1", "decisions": {"scratch/3": "accepted", "good/0": "rejected"}}

Keys are ``<kind>/<index>``; a pair without a key is undecided. Every decision is one
read-modify-write of the file under a lock (a thread lock, and ``fcntl.flock`` on
``.curation.json.lock`` where available, so two servers on one folder are safe too); the file
is re-read each time and written to a temporary file then renamed, so two tabs never undo each
other's decisions and a reader never sees half a file.
"""

from __future__ import annotations

import errno
import json
import math
import mimetypes
import os
import socket
import sys
import threading
import time
import webbrowser
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from seas.data.readers import GOOD
from seas.errors import ConfigError, RunError
from seas.files.atomic import write_text
from seas.generation.curation import (
    CURATION,
    CURATION_FORMAT,
    DECISIONS,
    key_text,
    read_decisions,
)
from seas.generation.generated import MANIFEST, SETTINGS, GeneratedFolder
from seas.model.prompts import MIX
from seas.run import RUN_FILE, Run

try:  # POSIX: a file lock shared by every process that serves the same folder
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock alone
    fcntl = None

UNDECIDED = "undecided"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BROWSER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}  # others are sent as PNG
STATIC_FILES = {"index.html", "gallery.js", "gallery.css"}
MAX_BODY = 4096  # bytes of a POST body
# Manifest fields the page shows in their own place; any other scalar field goes to "details".
KNOWN_FIELDS = {"kind", "index", "image", "mask", "prob", "reference", "prompt", "seed", "mask_area", "qc", "qc_status"}


class CurationStore:
    """Reads and changes ``curation.json`` one key at a time, safely from many threads."""

    def __init__(self, folder: Path):
        self.path = folder / CURATION
        self._lock = threading.Lock()

    def decisions(self) -> dict[str, str]:
        return read_decisions(self.path)

    def decide(self, key: str, decision: str) -> dict[str, str]:
        """Set one key (``"undecided"`` removes it); return every decision after the change.

        The file is re-read under the lock, so a decision made meanwhile (another tab,
        another server) is kept.
        """
        with self._lock, self._file_lock():
            decisions = read_decisions(self.path)
            if decision == UNDECIDED:
                decisions.pop(key, None)
            else:
                decisions[key] = decision
            payload = {"format": CURATION_FORMAT, "decisions": dict(sorted(decisions.items()))}
            # Written to a temporary file, then renamed: a reader never sees half a file. The tag
            # keeps writers apart where no file lock serialises them (two servers on Windows).
            tag = f".{os.getpid()}.{threading.get_ident()}"
            write_text(self.path, json.dumps(payload, indent=1) + "\n", tag)
            return decisions

    @contextmanager
    def _file_lock(self):
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(f".{CURATION}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- catalog


def check_generated_dir(generated_dir: str | Path) -> Path:
    """The resolved folder; RunError (one line) when it is not a ``seas generate`` folder."""
    return GeneratedFolder.existing(generated_dir, option="seas gallery").path


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, bool)) or _finite(value)


def _locate(text: object, bases: list[Path]) -> Path | None:
    """An existing file named by ``text``: absolute as it is, relative to the first base holding it."""
    if not isinstance(text, str) or not text:
        return None
    path = Path(text).expanduser()
    for candidate in [path] if path.is_absolute() else [base / path for base in bases]:
        if candidate.is_file():
            return candidate.absolute()
    return None


@dataclass
class Catalog:
    """What the page shows, and the only files the server may send."""

    page: dict  # the JSON of /api/catalog (decisions are added per request)
    keys: set[str]  # "<kind>/<index>" of every manifest row
    inside: set[str] = field(default_factory=set)  # manifest paths, relative to the folder
    outside: dict[str, Path] = field(default_factory=dict)  # listed absolute path text -> resolved file


class _CatalogBuilder:
    """Builds a :class:`Catalog`: ``inside_file`` / ``outside_file`` list a file and return its URL."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.catalog = Catalog(page={}, keys=set())

    def inside_file(self, text: object) -> str | None:
        """URL of a manifest path (relative to the folder), or None when the row names none."""
        if not isinstance(text, str) or not text:
            return None
        self.catalog.inside.add(text)
        return "/file?path=" + quote(text, safe="")

    def outside_file(self, path: Path | None) -> str | None:
        """URL of a file outside the folder named by the manifest or the split."""
        if path is None:
            return None
        text = str(path)
        self.catalog.outside[text] = path.resolve()
        return "/file?path=" + quote(text, safe="")


def _item(row: dict, build: _CatalogBuilder, bases: list[Path]) -> dict | None:
    """One generated pair for the page, or None for a row without kind, index and image."""
    kind, index = row.get("kind"), row.get("index")
    if not isinstance(kind, str) or not kind or isinstance(index, bool) or not isinstance(index, int):
        return None
    image = build.inside_file(row.get("image"))
    if image is None:
        return None
    reference = _locate(row.get("reference"), bases)
    qc = row.get("qc") if isinstance(row.get("qc"), dict) else {}
    details = {k: v for k, v in row.items() if k not in KNOWN_FIELDS and _scalar(v)}
    return {
        "key": key_text(kind, index),
        "kind": kind,
        "index": index,
        "image": image,
        "mask": build.inside_file(row.get("mask")),
        "prob": build.inside_file(row.get("prob")),
        "reference": build.outside_file(reference),
        "reference_path": row.get("reference") if isinstance(row.get("reference"), str) else None,
        "prompt": row.get("prompt") if isinstance(row.get("prompt"), str) else None,
        "seed": row.get("seed") if _finite(row.get("seed")) else None,
        "mask_area": row.get("mask_area") if _finite(row.get("mask_area")) else None,
        "qc": {str(name): value for name, value in qc.items() if _finite(value)},
        "qc_status": row.get("qc_status") if row.get("qc_status") in DECISIONS else None,
        "details": details,
    }


def _split_of(settings: dict) -> tuple[Path | None, dict | None, str | None]:
    """(the run record's path, the split with its data config, why it cannot be used) for the run
    named by generation.json; read through :class:`seas.run.Run` (weights not checked)."""
    run = settings.get("run")
    if not isinstance(run, str) or not run:
        return None, None, f"{SETTINGS} names no run folder"
    try:
        record = Run.load(run, verify=False)
    except RunError as err:
        return Path(run) / RUN_FILE, None, f"the run's split cannot be read: {err}"
    return record.path / RUN_FILE, {**record.split.to_dict(), "data": record.data.to_dict()}, None


def _real_pairs(kind: str, split: dict) -> list[dict]:
    """The training samples (dicts with "image", "mask") a kind is compared with."""
    if kind == GOOD:
        return list(split["normal_train"])
    return [sample for name in kind.split(MIX) for sample in split["train"].get(name, [])]


def _add_real(page: dict, build: _CatalogBuilder, settings: dict, kinds: list[str]) -> Path | None:
    """Fill ``page["real"]`` (kind -> pairs) and ``page["real_error"]``; return the run record's path."""
    page["real"], page["real_error"], page["real_threshold"] = {}, None, "half"
    split_path, split, error = _split_of(settings)
    if split is None:
        page["real_error"] = error
        return split_path
    data = split.get("data") if isinstance(split.get("data"), dict) else {}
    page["real_threshold"] = "nonzero" if data.get("mask_rule") == "nonzero" else "half"
    bases = [Path.cwd(), split_path.parent.parent, split_path.parent]
    missing = 0
    for kind in kinds:
        pairs = []
        for sample in _real_pairs(kind, split):
            image = _locate(sample.get("image") if isinstance(sample, dict) else None, bases)
            if image is None:
                missing += 1
                continue
            mask = _locate(sample.get("mask"), bases)
            pairs.append({"name": image.name, "image": build.outside_file(image), "mask": build.outside_file(mask)})
        page["real"][kind] = pairs
    if missing:
        page["notes"].append(f"{missing} training image(s) named in {split_path} are missing and not shown")
    return split_path


def build_catalog(folder: Path) -> tuple[Catalog, Path | None]:
    """The catalog of a checked folder, and the run record it read (to watch for changes)."""
    build = _CatalogBuilder(folder)
    generated = GeneratedFolder(folder)
    page = {"folder": str(folder), "curation_file": str(folder / CURATION), "notes": []}
    try:
        settings = generated.settings()
    except RunError:
        settings = {}
        page["notes"].append(f"{generated.settings_file} cannot be read; the run's settings and real pairs are not "
                             "shown")
    run = Path(settings["run"]) if isinstance(settings.get("run"), str) else folder.parent
    bases = [Path.cwd(), run.parent, run, folder]
    rows, skipped = generated.lenient_rows()
    by_key = {}
    for row in rows:
        item = _item(row, build, bases)
        if item is None:
            skipped += 1
        else:
            by_key[item["key"]] = item  # a later row of the same output replaces an earlier one
    items = list(by_key.values())
    build.catalog.keys = set(by_key)
    if skipped:
        page["notes"].append(f"{skipped} row(s) of {MANIFEST} without kind, index or image are not shown")
    listed = [k for k in settings.get("kinds", []) if isinstance(k, str)]
    kinds = [k for k in listed if any(i["kind"] == k for i in items)]
    kinds += sorted({i["kind"] for i in items} - set(kinds))
    items.sort(key=lambda i: (kinds.index(i["kind"]), i["index"]))
    page["settings"] = {k: settings[k] for k in ("run", "product", "num", "seed", "steps", "guidance") if k in settings}
    page["kinds"], page["items"] = kinds, items
    page["qc_names"] = sorted({name for i in items for name in i["qc"]})
    split_path = _add_real(page, build, settings, kinds)
    build.catalog.page = page
    return build.catalog, split_path


class CatalogCache:
    """The catalog of one folder, rebuilt when the manifest, settings or split file changes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._split: Path | None = None
        self._signature: tuple = ()

    def _watched(self) -> tuple:
        stats = []
        generated = GeneratedFolder(self.folder)
        for path in (generated.manifest, generated.settings_file, self._split):
            try:
                st = path.stat() if path is not None else None
                stats.append((st.st_mtime_ns, st.st_size) if st else None)
            except OSError:
                stats.append(None)
        return tuple(stats)

    def get(self) -> Catalog:
        with self._lock:
            signature = self._watched()
            if self._catalog is None or signature != self._signature:
                try:
                    self._catalog, self._split = build_catalog(self.folder)
                except OSError:
                    if self._catalog is None:
                        raise
                    return self._catalog  # the manifest is being replaced: the last one meanwhile
                self._signature = self._watched()
            return self._catalog


# ----------------------------------------------------------------------------- HTTP


class GalleryApp:
    """Everything a request handler needs: the folder, its catalog and its curation file."""

    def __init__(self, folder: Path, loopback: bool):
        self.folder = folder
        self.catalog = CatalogCache(folder)
        self.curation = CurationStore(folder)
        self.loopback = loopback  # bound to a loopback address: check the Host header


class GalleryHandler(BaseHTTPRequestHandler):
    """One request. Routes are in :meth:`do_GET` and :meth:`do_POST`."""

    server_version = "seas-gallery"
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> GalleryApp:
        return self.server.app

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: a page asks for hundreds of images

    # --- routes

    def do_GET(self) -> None:
        if not self._host_allowed():
            return self._send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            return self._send_static("index.html")
        if url.path.startswith("/static/"):
            return self._send_static(url.path[len("/static/"):])
        if url.path == "/api/catalog":
            return self._send_catalog()
        if url.path == "/api/curation":
            return self._send_json(HTTPStatus.OK, self._decisions())
        if url.path == "/file":
            paths = parse_qs(url.query).get("path", [])
            return self._send_file(paths[0] if len(paths) == 1 else "")
        return self._send_error(HTTPStatus.NOT_FOUND, "no such page")

    def do_POST(self) -> None:
        if not self._host_allowed() or not self._same_origin():
            return self._send_error(HTTPStatus.FORBIDDEN, "requests from other sites are refused")
        if urlsplit(self.path).path != "/api/decision":
            return self._send_error(HTTPStatus.NOT_FOUND, "no such action")
        if self.headers.get_content_type() != "application/json":
            return self._send_error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        body, error = self._read_body()
        if error:
            return self._send_error(HTTPStatus.BAD_REQUEST, error)
        key, decision = body.get("key"), body.get("decision")
        if decision not in (*DECISIONS, UNDECIDED):
            return self._send_error(HTTPStatus.BAD_REQUEST, "decision must be 'accepted', 'rejected' or 'undecided'")
        if key not in self.app.catalog.get().keys:
            return self._send_error(HTTPStatus.NOT_FOUND, f"{key!r} is not an output of {MANIFEST}")
        try:
            decisions = self.app.curation.decide(key, decision)
        except RunError as err:  # a damaged curation file: never overwrite it
            return self._send_error(HTTPStatus.CONFLICT, str(err))
        except OSError as err:
            return self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{err.filename}: cannot be written ({err.strerror})")
        return self._send_json(HTTPStatus.OK, {"key": key, "decision": decision, "decisions": decisions})

    # --- checks

    def _host_allowed(self) -> bool:
        """On a loopback address, only loopback host names (a DNS-rebinding page has its own)."""
        if not self.app.loopback:
            return True
        host = urlsplit("//" + self.headers.get("Host", "")).hostname
        return host in LOOPBACK_NAMES

    def _same_origin(self) -> bool:
        """A POST sent by a page of another site carries that site's Origin."""
        origin = self.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == self.headers.get("Host")

    def _read_body(self) -> tuple[dict, str | None]:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return {}, "Content-Length is required"
        if not 0 <= length <= MAX_BODY:
            return {}, f"the body must be at most {MAX_BODY} bytes"
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}, "the body is not JSON"
        return (body, None) if isinstance(body, dict) else ({}, "the body must be a JSON object")

    # --- answers

    def _decisions(self) -> dict:
        try:
            return {"decisions": self.app.curation.decisions(), "curation_error": None}
        except RunError as err:
            return {"decisions": {}, "curation_error": str(err)}

    def _send_catalog(self) -> None:
        try:
            page = dict(self.app.catalog.get().page)
        except OSError as err:  # the manifest vanished meanwhile
            return self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{err.filename}: cannot be read ({err.strerror})")
        return self._send_json(HTTPStatus.OK, {**page, **self._decisions()})

    def _send_static(self, name: str) -> None:
        if name not in STATIC_FILES:
            return self._send_error(HTTPStatus.NOT_FOUND, "no such file")
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        kind = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
        return self._send(HTTPStatus.OK, body, f"{kind}; charset=utf-8", {"Cache-Control": "no-cache"})

    def _send_file(self, text: str) -> None:
        path, status = self._listed_file(text)
        if path is None:
            return self._send_error(status, "not a file of this gallery")
        try:
            st = path.stat()
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            if self.headers.get("If-None-Match") == etag:
                return self._send(HTTPStatus.NOT_MODIFIED, b"", None, {"ETag": etag})
            body, kind = self._image_bytes(path)
        except OSError:
            return self._send_error(HTTPStatus.NOT_FOUND, "the file cannot be read")
        return self._send(HTTPStatus.OK, body, kind, {"ETag": etag, "Cache-Control": "no-cache"})

    def _listed_file(self, text: str) -> tuple[Path | None, HTTPStatus]:
        """The file a path text from the catalog names, or (None, 403/404). See the module docstring."""
        catalog = self.app.catalog.get()
        if text in catalog.inside:
            path = (self.app.folder / text).resolve()
            if not path.is_relative_to(self.app.folder):
                return None, HTTPStatus.FORBIDDEN  # "..", an absolute path, or a link out of the folder
        elif text in catalog.outside:
            path = Path(text).resolve()
            if path != catalog.outside[text]:
                return None, HTTPStatus.FORBIDDEN  # a link changed since the catalog was read
        else:
            return None, HTTPStatus.NOT_FOUND
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            return None, HTTPStatus.FORBIDDEN
        if not path.is_file():
            return None, HTTPStatus.NOT_FOUND
        return path, HTTPStatus.OK

    @staticmethod
    def _image_bytes(path: Path) -> tuple[bytes, str]:
        """The file's bytes, or a PNG of it for formats browsers do not show (TIFF)."""
        if path.suffix.lower() in BROWSER_SUFFIXES:
            return path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        import io

        from PIL import Image

        buffer = io.BytesIO()
        try:
            with Image.open(path) as img:
                img = img.convert("I").point(lambda v: v / 256).convert("L") if img.mode.startswith("I;16") else img
                (img if img.mode in ("L", "RGB", "RGBA") else img.convert("RGB")).save(buffer, format="PNG")
        except (OSError, ValueError) as err:
            raise OSError(errno.EIO, str(err), str(path)) from err
        return buffer.getvalue(), "image/png"

    def _send_json(self, status: HTTPStatus, data: dict) -> None:
        body = json.dumps(data).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send_json(status, {"error": message})

    def _send(self, status: HTTPStatus, body: bytes, content_type: str | None, headers: dict) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        # Everything comes from this server: no CDN, no inline script.
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: GalleryApp

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the browser dropped the connection (a tab closed, a page left): not an error
        super().handle_error(request, client_address)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class GalleryServer:
    """A started gallery server: its ``url``; ``shutdown()`` stops it (also as a context manager)."""

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread, folder: Path):
        self.httpd, self.thread, self.folder = httpd, thread, folder
        host, port = httpd.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        self.host, self.port = host, port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> GalleryServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def serve(generated_dir: str | Path, host: str = DEFAULT_HOST, port: int = 0, open_browser: bool = False) -> GalleryServer:
    """Start serving the gallery of ``generated_dir`` in a background thread; return at once.

    ``port`` 0 takes any free port (see ``.url``). Raises RunError for a folder that is not a
    ``seas generate`` folder or an address that cannot be bound, ConfigError for a bad port.
    """
    folder = check_generated_dir(generated_dir)
    if not all(resources.files(__package__).joinpath("static", name).is_file() for name in STATIC_FILES):
        raise RunError(f"{__package__}: the page's files (static/) are not installed; reinstall seas with them")
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"--port {port}: must lie in 0..65535 (0 takes any free port)")
    server_class = _HTTPServer6 if ":" in host else _HTTPServer
    try:
        httpd = server_class((host, int(port)), GalleryHandler)
    except OSError as err:
        hint = "choose another --port, or --port 0 for any free one" if err.errno == errno.EADDRINUSE else "check --host"
        raise RunError(f"--host {host} --port {port}: cannot listen there ({err.strerror}); {hint}") from None
    httpd.app = GalleryApp(folder, loopback=_is_loopback(host))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="seas-gallery", daemon=True)
    thread.start()
    server = GalleryServer(httpd, thread, folder)
    if open_browser:
        webbrowser.open(server.url)
    return server


def run_gallery(
    generated_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False
) -> None:
    """Serve the gallery of ``generated_dir`` until Ctrl-C; print its address first."""
    server = serve(generated_dir, host, port, open_browser)
    try:  # from the first printed line on, Ctrl-C stops cleanly (a user may press it at once)
        print(f"seas gallery: {server.folder} at {server.url}  (Ctrl-C to stop)", flush=True)
        if not _is_loopback(host):
            print("seas gallery: warning: other machines can reach this address; anyone who can may curate",
                  file=sys.stderr)
        while server.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
