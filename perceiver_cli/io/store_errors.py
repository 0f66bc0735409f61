"""A store's failures in the user's words: one line each, UsageError for setup, InputError for one item.

Setup problems stop the run whatever the item (exit 2): a missing bucket, credentials that are missing or
rejected, an endpoint that cannot be reached. Problems of one object fail that item when `setup` is False
(exit 1): a missing key, access denied to it, a store that did not answer in time. Exceptions are matched by
class name, so botocore and aiohttp are never imported here.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

from perceiver_cli.errors import InputError, PerceiverError, UsageError
from perceiver_cli.io import location as _location
from perceiver_cli.io.location import bucket_of, scheme_of

# Where each store looks for credentials, for the message that says none were found or accepted.
_CREDENTIALS_HINT = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_CONNECTION_STRING)",
}
_HINT_FAMILY = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az"}

_REJECTED_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                         "AuthorizationHeaderMalformed", "InvalidClientTokenId", "AuthenticationFailed"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AuthorizationPermissionMismatch", "AuthorizationFailure", "403"}
_MISSING_KEY = {"NoSuchKey", "404", "BlobNotFound", "NotFound"}
_MISSING_BUCKET = {"NoSuchBucket", "ContainerNotFound"}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}
_UNREACHABLE = {"EndpointConnectionError", "ClientConnectorError", "ServerDisconnectedError",
                "ConnectionRefusedError", "ClientOSError"}
_TIMED_OUT = {"ReadTimeoutError", "ConnectTimeoutError", "FSTimeoutError", "TimeoutError", "ServerTimeoutError"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, innermost last (drivers wrap the store's error in their own)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _store_code(exc: BaseException) -> tuple[str, int]:
    """The store's error code and HTTP status from a botocore-style error response, else ("", 0)."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(error.get("Code", "")), int(status or 0)
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if isinstance(status, int):
        return getattr(exc, "error_code", None) or str(status), status
    return "", 0


def _endpoint(exc: BaseException) -> str:
    """The endpoint a connection error names, if it names one."""
    kwargs = getattr(exc, "kwargs", None)
    if isinstance(kwargs, dict) and kwargs.get("endpoint_url"):
        parts = urlsplit(str(kwargs["endpoint_url"]))  # the request's URL: keep only the server's part
        return f"{parts.scheme}://{parts.netloc}"
    host = getattr(exc, "host", None)
    port = getattr(exc, "port", None)
    if host:
        return f"{host}:{port}" if port else str(host)
    return ""


def _hint(location: str) -> str:
    scheme = scheme_of(location)
    return _CREDENTIALS_HINT.get(_HINT_FAMILY.get(scheme, scheme), "the store's credential settings")


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _classify(exc: BaseException) -> tuple[str, str, str]:
    """(kind, detail, endpoint) of a store failure; kind is one of the cases this module words."""
    kinds: list[tuple[str, str, str]] = []
    for link in _chain(exc):
        names = _names(link)
        code, status = _store_code(link)
        if code in _MISSING_BUCKET:
            return "bucket", code, ""
        if code in _REJECTED_CREDENTIALS:
            return "credentials", code, ""
        if code in _DENIED or status == 403:
            kinds.append(("denied", code, ""))
        elif code in _MISSING_KEY or status == 404:
            kinds.append(("missing", code, ""))
        elif names & _NO_CREDENTIALS:
            kinds.append(("no-credentials", "", ""))
        elif names & _TIMED_OUT:
            kinds.append(("timeout", "", _endpoint(link)))
        elif names & _UNREACHABLE:
            kinds.append(("unreachable", "", _endpoint(link)))
        elif isinstance(link, FileNotFoundError):
            kinds.append(("missing", "", ""))
        elif isinstance(link, PermissionError):
            kinds.append(("denied", "", ""))
    if kinds:
        kind, detail, _ = kinds[-1]  # the innermost cause is the store's own answer; outer ones name the server
        return kind, detail, next((where for _, _, where in kinds if where), "")
    return "other", f"{type(exc).__name__}: {_one_line(str(exc))}", ""


def _why_forbidden(location: str) -> tuple[str, str]:
    """A bare 403 (a HEAD has no body to say why): ask the bucket once, whose answer names the reason."""
    if scheme_of(location) not in ("s3", "s3a"):
        return "denied", ""
    try:
        fs, _ = _location.filesystem(location)
        fs.call_s3("list_objects_v2", Bucket=bucket_of(location), MaxKeys=1)
    except Exception as exc:
        kind, detail, _ = _classify(exc)
        if kind == "credentials":
            return kind, detail
    return "denied", ""


def store_error(exc: BaseException, location: str | os.PathLike[str], setup: bool = False) -> PerceiverError:
    """The one-line error for a store failure at `location`; `setup`: the run cannot go on (exit 2) even for
    failures that would otherwise fail only one item."""
    where = os.fspath(location)
    kind, detail, endpoint = _classify(exc)
    if kind == "denied" and detail in ("", "403"):
        kind, detail = _why_forbidden(where)
    at = f" at {endpoint}" if endpoint else ""
    if kind == "bucket":
        return UsageError(f"{where}: bucket {bucket_of(where)} does not exist")
    if kind == "credentials":
        return UsageError(f"{where}: the store rejected the credentials ({detail}); check {_hint(where)}")
    if kind == "no-credentials":
        return UsageError(f"{where}: no credentials found; set {_hint(where)}")
    if kind == "unreachable":
        return UsageError(f"{where}: cannot reach the store{at}")
    item_error = UsageError if setup else InputError
    if kind == "missing":
        return item_error(f"{where}: no such file or folder")
    if kind == "denied":
        return item_error(f"{where}: access denied (403)")
    if kind == "timeout":
        limits = _location.TIMEOUTS
        return item_error(f"{where}: the store{at} did not answer within {limits.read_s:g} s "
                          f"({limits.attempts} attempts)")
    return item_error(f"{where}: store error ({detail})")


@contextmanager
def store_errors(location: str | os.PathLike[str], setup: bool = False) -> Iterator[None]:
    """Turn a store failure inside the block into its one-line PerceiverError (errors of ours pass through)."""
    try:
        yield
    except PerceiverError:
        raise
    except Exception as exc:  # KeyboardInterrupt and SystemExit pass untouched
        raise store_error(exc, location, setup) from None
