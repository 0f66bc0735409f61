"""A real S3-protocol server on the loopback interface for the tests: moto's ThreadedMotoServer, with every
request it answers counted and a hook a test can set to act when a given request arrives (stop the server,
signal a process, hold the request). The clients under test talk to it over HTTP through AWS_ENDPOINT_URL,
as they would to MinIO or Ceph; nothing in the client is mocked.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

# Credentials moto accepts while authentication is off (it is off unless a test turns it on).
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


class _OneRequestPerConnection(MotoRequestHandler):
    """HTTP/1.0: each request on a new connection, so a halted server refuses the very next request (a kept
    connection would still be served by its thread)."""

    protocol_version = "HTTP/1.0"


class S3Server(ThreadedMotoServer):
    """moto on 127.0.0.1 (a free port on first start, the same port after a restart); `requests` holds
    (method, path, query, Range header) of each request; `hook(method, path, query)` runs before each."""

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[tuple[str, str, str, Optional[str]]] = []
        self.hook: Optional[Callable[[str, str, str], None]] = None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            method, path, query = environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]
            if not path.startswith("/moto-api"):
                self.requests.append((method, path, query, environ.get("HTTP_RANGE")))
                if self.hook is not None:
                    self.hook(method, path, query)
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, counted, True, request_handler=_OneRequestPerConnection)
        self._port = self._server.server_address[1]  # a restart binds the same port again
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def halt(self) -> None:
        """Stop serving and close the listening socket, so new connections are refused; callable from a hook
        (the request being served still gets its answer)."""
        self._server_ready_event.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.socket.close()

    def stop(self) -> None:
        """Halt and wait for the serving thread (moto's own stop leaves the socket open)."""
        self.halt()
        if self._thread is not None:
            self._thread.join()

    def running(self) -> bool:
        return self._server_ready_event.is_set()


def seed_objects(bucket: str, keys: list[str], body: bytes = b"") -> None:
    """Put many objects straight into moto's store (the server's state), faster than thousands of PUTs."""
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key in keys:
        backend.put_object(bucket, key, body)
