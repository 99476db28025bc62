"""Forwarding one OpenAI-style request to an upstream, unchanged, and recording what happened.

The body goes upstream byte for byte; the reply comes back with the upstream's status, headers and body (a
stream is relayed chunk by chunk as it arrives). Once the reply has been passed on, `on_record` gets the
call as a capture record: a stream reassembled, an upstream error with its body, a timeout or a stream cut
halfway as an error with what arrived before it. Nothing here knows about web frameworks or databases.

The HTTP client is aiohttp rather than httpx (which tuneforge uses elsewhere): with 64 requests in flight
to one host, httpx's async client carries a small fraction of what aiohttp does (bench/capture_overhead.py
measures both), and the proxy's whole point is to cost the app nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tuneforge.capture import record as rec
from tuneforge.capture.upstreams import Upstream

# request headers worth passing on (the caller's tuneforge key is not among them)
PASS_REQUEST = ("content-type", "accept", "openai-organization", "openai-project", "openai-beta", "user-agent")
# response headers the relaying server sets itself
DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "server",
                 "date"}
MAX_RECORDED_BYTES = 8 << 20  # what is kept of one reply for the log


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None  # a whole reply
    stream: AsyncIterator[bytes] | None = None  # or a server-sent-event stream, relayed as it comes


class UpstreamFailed(Exception):
    """No reply at all (timeout before the headers, connection refused): the status to answer with."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.code = status, code


class Forwarder:
    def __init__(self, timeout: float = 600.0, connect_timeout: float = 10.0):
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the server's event loop, on first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=self.timeout),
                auto_decompress=False, skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, upstream: Upstream, path: str, body: bytes, headers: dict[str, str],
                      authorization: str | None, on_record: Callable[[dict[str, Any]], None],
                      base_record: dict[str, Any]) -> Reply:
        """Send upstream and return the reply to relay; `on_record` is called once the call is over with
        `base_record` (what is known before the call: id, model, request, stream, tags...) completed."""
        out = {k: v for k, v in headers.items() if k in PASS_REQUEST}
        out["accept-encoding"] = "identity"
        auth = authorization or upstream.authorization()
        if auth:
            out["authorization"] = auth
        call = _Call(base_record, time.perf_counter(), on_record)
        try:
            response = await self._client().post(upstream.endpoint(path), data=body, headers=out)
        except aiohttp.ConnectionTimeoutError:
            call.finish(None, None, {"type": "upstream_unreachable", "message": "connect timed out"})
            raise UpstreamFailed(502, f"Cannot connect to the upstream at {upstream.url} within "
                                 f"{self.connect_timeout:g} s", "upstream_unreachable") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            call.finish(None, None, {"type": "upstream_timeout", "message": f"no reply in {self.timeout:g} s"})
            raise UpstreamFailed(504, f"The upstream did not answer within {self.timeout:g} s", "upstream_timeout") \
                from None
        except aiohttp.ClientError as exc:
            call.finish(None, None, {"type": "upstream_unreachable", "message": f"{type(exc).__name__}: {exc}"})
            raise UpstreamFailed(502, f"Cannot reach the upstream at {upstream.url}: {type(exc).__name__}",
                                 "upstream_unreachable") from None
        reply_headers = [(k, v) for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE]
        if response.headers.get("content-type", "").startswith("text/event-stream") and response.status < 300:
            return Reply(response.status, reply_headers, stream=call.relay(response))
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            call.finish(response.status, None, {"type": "upstream_broken", "message": f"{type(exc).__name__}"})
            raise UpstreamFailed(502, f"The upstream's reply broke off: {type(exc).__name__}", "upstream_broken") \
                from None
        finally:
            response.release()
        call.finish_body(response.status, data)
        return Reply(response.status, reply_headers, body=data)


class _Call:
    def __init__(self, base: dict[str, Any], t0: float, on_record: Callable[[dict[str, Any]], None]):
        self.base, self.t0, self.on_record = base, t0, on_record
        self.ttft: float | None = None

    def finish(self, status: int | None, response: dict | None, error: dict | None) -> None:
        latency = (time.perf_counter() - self.t0) * 1000
        self.on_record({
            **self.base, "response": response, "status": status, "error": error,
            "latency_ms": round(latency, 3), "ttft_ms": None if self.ttft is None else round(self.ttft, 3),
        })

    def finish_body(self, status: int, data: bytes) -> None:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"_raw": data[:4096].decode("utf-8", "replace")}
        if not isinstance(parsed, dict):
            parsed = {"_raw": data[:4096].decode("utf-8", "replace")}
        if status < 300:
            self.finish(status, parsed, None)
        else:
            self.finish(status, None, parsed.get("error", parsed) if isinstance(parsed, dict) else parsed)

    async def relay(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        seen = bytearray()
        try:
            async for chunk in response.content.iter_any():
                if self.ttft is None:
                    self.ttft = (time.perf_counter() - self.t0) * 1000
                if len(seen) < MAX_RECORDED_BYTES:
                    seen += chunk
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            partial = rec.reassemble(rec.parse_sse(bytes(seen)))
            self.finish(response.status, partial, {"type": "upstream_broken",
                                                   "message": f"the stream broke off: {type(exc).__name__}"})
            raise  # the caller's stream breaks too, as the upstream's did
        except BaseException:  # the caller went away: the upstream request is dropped with it
            partial = rec.reassemble(rec.parse_sse(bytes(seen)))
            self.finish(response.status, partial, {"type": "incomplete", "message": "the caller disconnected"})
            raise
        finally:
            response.release()
        chunks = rec.parse_sse(bytes(seen))
        errors = [c["error"] for c in chunks if "error" in c]
        self.finish(response.status, rec.reassemble([c for c in chunks if "error" not in c]),
                    errors[0] if errors else None)
