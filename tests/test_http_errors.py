"""Reading HTTP statuses, retry hints and transience from the common clients' exceptions."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
from typing import Any

import httpx
import pytest
import requests

from agentperf._http import is_overload, is_transient, retry_after, status_of


def _httpx_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    resp = httpx.Response(status, headers=headers or {}, request=req)
    return httpx.HTTPStatusError("boom", request=req, response=resp)


def _requests_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers or {})
    return requests.HTTPError("boom", response=resp)


class Shaped(Exception):
    """An exception with the attributes the openai/anthropic/aiohttp errors have."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__("shaped")
        for k, v in attrs.items():
            setattr(self, k, v)


def test_status_of_every_shape() -> None:
    assert status_of(_httpx_error(503)) == 503
    assert status_of(_requests_error(429)) == 429
    assert status_of(Shaped(status_code=500)) == 500  # openai, anthropic
    assert status_of(Shaped(status=502)) == 502  # aiohttp ClientResponseError
    assert status_of(ValueError("no status")) is None
    assert status_of(Shaped(status_code="429")) is None  # not an int
    assert status_of(Shaped(status_code=True)) is None
    assert status_of(Shaped(status=7)) is None  # not an HTTP status


def test_status_of_never_raises_on_hostile_attributes() -> None:
    class Hostile(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("property raised")

        @property
        def response(self) -> Any:
            raise RuntimeError("property raised")

    assert status_of(Hostile()) is None
    assert retry_after(Hostile()) is None
    assert is_transient(Hostile()) is False


def test_retry_after_seconds_ms_and_date() -> None:
    assert retry_after(_httpx_error(429, {"Retry-After": "3"})) == 3.0
    assert retry_after(_requests_error(429, {"retry-after": "1.5"})) == 1.5
    # retry-after-ms wins when both are there
    both = {"retry-after": "9", "retry-after-ms": "250"}
    assert retry_after(_httpx_error(429, both)) == pytest.approx(0.25)
    # a plain dict with other casing (aiohttp's exc.headers may be one)
    assert retry_after(Shaped(status=429, headers={"Retry-After-Ms": "1200"})) == 1.2
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
    date = email.utils.format_datetime(when, usegmt=True)
    got = retry_after(_httpx_error(429, {"Retry-After": date}))
    assert got is not None and 25.0 <= got <= 30.5
    past = email.utils.format_datetime(
        datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc), usegmt=True
    )
    assert retry_after(_httpx_error(429, {"Retry-After": past})) == 0.0
    assert retry_after(_httpx_error(429, {"Retry-After": "-4"})) == 0.0


def test_retry_after_without_a_usable_hint() -> None:
    assert retry_after(_httpx_error(429)) is None
    assert retry_after(_httpx_error(429, {"Retry-After": "soon"})) is None
    assert retry_after(_httpx_error(429, {"Retry-After": "nan"})) is None
    assert retry_after(ValueError()) is None
    # a useless ms header falls back to retry-after
    assert retry_after(_httpx_error(429, {"retry-after-ms": "x", "retry-after": "2"})) == 2.0


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    assert is_transient(_httpx_error(status))
    assert is_transient(_requests_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501])
def test_permanent_statuses(status: int) -> None:
    assert not is_transient(_httpx_error(status))


def test_transient_classes_without_importing_them() -> None:
    req = httpx.Request("GET", "http://127.0.0.1/")
    assert is_transient(httpx.ConnectTimeout("t", request=req))  # a TransportError
    assert is_transient(httpx.ReadError("r", request=req))
    assert is_transient(requests.ConnectionError("c"))
    assert is_transient(requests.Timeout("t"))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError("bad input"))
    assert not is_transient(KeyboardInterrupt())
    assert not is_transient(asyncio.CancelledError())


def test_openai_and_aiohttp_errors_when_installed() -> None:
    openai = pytest.importorskip("openai")
    req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    resp = httpx.Response(429, headers={"retry-after-ms": "700"}, request=req)
    err = openai.RateLimitError("slow down", response=resp, body=None)
    assert status_of(err) == 429 and retry_after(err) == pytest.approx(0.7)
    assert is_transient(err) and is_overload(err)
    assert is_transient(openai.APIConnectionError(request=req))
    assert is_transient(openai.APITimeoutError(request=req))


def test_overload_signals() -> None:
    assert is_overload(_httpx_error(429))
    assert is_overload(_httpx_error(503))
    assert is_overload(TimeoutError())
    assert not is_overload(_httpx_error(500))
    assert not is_overload(ValueError())
