"""A real S3-protocol server on the loopback interface for the tests: moto's ThreadedMotoServer, with every
request it answers counted and a hook a test can set to act when a given request arrives (stop the server,
signal a process, hold the request). The clients under test talk to it over HTTP through AWS_ENDPOINT_URL,
as they would to MinIO or Ceph; nothing in the client is mocked.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from perceiver_cli.io import location

# Credentials moto accepts while authentication is off (it is off unless a test turns it on).
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
# What the credential errors tell a user to set.
HINT = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


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


@dataclass
class Bucket:
    """A fresh bucket on the server, and a boto3 client to look at it independently of the code under test."""

    server: S3Server
    client: object
    name: str

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def uploads(self) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", [])]


def use_endpoint(monkeypatch, endpoint: str, tmp_path: Path) -> None:
    """Point the standard AWS variables at an endpoint, with moto's test credentials and no user config."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    location.forget_filesystems()


@contextmanager
def fresh_bucket(server: "S3Server", monkeypatch, tmp_path: Path, spool: Path) -> Iterator["Bucket"]:
    """A new empty bucket on `server` (restarted if a test stopped it), the AWS variables and short waits set
    for this test, uploads spooled in `spool`; the file systems are forgotten afterwards."""
    import boto3

    from perceiver_cli.io import store_write

    if not server.running():
        server.start()
    server.hook = None
    use_endpoint(monkeypatch, server.endpoint, tmp_path)
    monkeypatch.setattr(location, "TIMEOUTS", location.Timeouts(connect_s=2, read_s=2, attempts=2))
    monkeypatch.setattr(store_write, "SPOOL_DIR", str(spool))
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    try:
        yield Bucket(server, client, name)
    finally:
        server.hook = None
        location.forget_filesystems()


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    """One server per test module (import this fixture into the module)."""
    s3 = S3Server()
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture
def spool(tmp_path) -> Path:
    """The folder remote outputs are spooled in, inside the test's own folder."""
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


@pytest.fixture
def bucket(server, monkeypatch, tmp_path, spool) -> Iterator[Bucket]:
    """A fresh bucket on the module's server (import with `server` and `spool`)."""
    with fresh_bucket(server, monkeypatch, tmp_path, spool) as made:
        yield made


@pytest.fixture
def authenticating(bucket):
    """moto checking signatures and IAM permissions; a user with no permission at all (import with `bucket`)."""
    import boto3
    import requests

    iam = boto3.client("iam", endpoint_url=bucket.server.endpoint, region_name=REGION)
    user = f"u{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    access = iam.create_access_key(UserName=user)["AccessKey"]
    requests.post(f"{bucket.server.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
    yield access
    requests.post(f"{bucket.server.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
