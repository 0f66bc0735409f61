"""A loopback HTTP server that speaks the part of the Hugging Face hub protocol huggingface_hub's client uses to
download a model repo, with faults on request: missing repos, refused access, server errors, a silent server,
connections dropped halfway, and bodies that differ from the digest advertised for them.

Endpoints (what the client asks, read from huggingface_hub's own code):
- GET  /api/models/OWNER/NAME[/revision/REV]      -> {"id", "sha", "siblings": [{"rfilename"}]}
- GET  /api/models/OWNER/NAME/tree/REV            -> [{"type": "file", "path", "size", "oid"[, "lfs"]}]
- HEAD /OWNER/NAME/resolve/REV/FILE               -> X-Repo-Commit, ETag (git blob id), for LFS files
                                                     X-Linked-Etag (sha256) and X-Linked-Size, Content-Length
- GET  /OWNER/NAME/resolve/REV/FILE               -> the bytes; `Range: bytes=N-` answered with 206
Files ending in .safetensors or .bin are LFS files (named by sha256), others are plain git blobs (sha1).

Binds 127.0.0.1 only; every wait is bounded; `stop()` (or leaving the `with` block) ends it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin")
# The longest a silent connection is held open before the server gives up on it by itself.
SILENCE_LIMIT_S = 30.0


def is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Faults:
    """What goes wrong, set by a test before (or between) runs."""

    status: Optional[int] = None          # answer every request with this HTTP status
    error_code: Optional[str] = None      # ... and this X-Error-Code (RepoNotFound, GatedRepo, ...)
    silent: bool = False                  # accept connections and never answer
    silent_on_files: bool = False         # answer the API, never the files' resolve requests
    drop_after: Optional[int] = None      # close a weights GET after this many body bytes ...
    drops_left: int = 0                   # ... this many times
    corrupt: bool = False                 # serve weights whose bytes differ from the advertised sha256


@dataclass
class HubServer:
    """Serves `repos` ({repo id: {file name: bytes}}) on 127.0.0.1 at a free port, in a daemon thread."""

    repos: dict[str, dict[str, bytes]]
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, Optional[str]]] = field(default_factory=list)  # (method, path, Range)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def record(self, method: str, path: str, range_header: Optional[str]) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def gets_of(self, name: str) -> list[Optional[str]]:
        """The Range header of every GET of a file of this name (None: the whole file)."""
        with self._lock:
            return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + name)]

    def take_drop(self) -> bool:
        with self._lock:
            if self.faults.drop_after is None or self.faults.drops_left <= 0:
                return False
            self.faults.drops_left -= 1
            return True


def _handler_for(hub: HubServer):
    api = re.compile(r"^/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?/?$")
    tree = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?$")
    resolve = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: tests read the request list instead
            pass

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"", with_body: bool = True) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            if with_body and body:
                self.wfile.write(body)

        def _json(self, status: int, obj, with_body: bool, headers: Optional[dict[str, str]] = None) -> None:
            body = json.dumps(obj).encode()
            self._send(status, {"Content-Type": "application/json", **(headers or {})}, body, with_body)

        def _answer(self, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            hub.record(self.command, path, self.headers.get("Range"))
            faults = hub.faults
            if faults.silent or (faults.silent_on_files and "/resolve/" in path):
                hub._stopping.wait(SILENCE_LIMIT_S)
                self.close_connection = True
                return
            if faults.status is not None:
                headers = {"X-Error-Code": faults.error_code} if faults.error_code else {}
                headers["X-Error-Message"] = "refused by the test server"
                self._json(faults.status, {"error": "refused by the test server"}, with_body, headers)
                return
            if (match := tree.match(path)) is not None:
                files = hub.repos.get(match.group(1))
                if files is None:
                    return self._json(404, {"error": "Repository not found"}, with_body,
                                      {"X-Error-Code": "RepoNotFound"})
                entries = []
                for name, data in files.items():
                    entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
                    if is_lfs(name):
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                        "pointerSize": 134}
                    entries.append(entry)
                return self._json(200, entries, with_body)
            if (match := api.match(path)) is not None:
                files = hub.repos.get(match.group(1))
                if files is None:
                    return self._json(404, {"error": "Repository not found"}, with_body,
                                      {"X-Error-Code": "RepoNotFound"})
                return self._json(200, {"id": match.group(1), "modelId": match.group(1), "sha": COMMIT,
                                        "siblings": [{"rfilename": name} for name in files]}, with_body)
            if (match := resolve.match(path)) is not None:
                return self._file(match.group(1), match.group(3), with_body)
            self._json(404, {"error": "no such endpoint"}, with_body)

        def _file(self, repo: str, name: str, with_body: bool) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self._json(404, {"error": "Repository not found"}, with_body, {"X-Error-Code": "RepoNotFound"})
            if name not in files:
                return self._json(404, {"error": "Entry not found"}, with_body, {"X-Error-Code": "EntryNotFound"})
            data = files[name]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_id(data)}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if is_lfs(name):
                headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
                headers["X-Linked-Size"] = str(len(data))
                if hub.faults.corrupt:
                    data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            start = 0
            range_header = self.headers.get("Range")
            if with_body and range_header and (m := re.fullmatch(r"bytes=(\d+)-", range_header.strip())):
                start = int(m.group(1))
            body = data[start:]
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            headers["Content-Length"] = str(len(body))
            if with_body and is_lfs(name) and hub.take_drop():
                cut = max(1, min(hub.faults.drop_after, len(body) - 1))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, headers, body, with_body)

    return Handler
