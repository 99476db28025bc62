"""Forwarding one OpenAI-style request to an upstream, unchanged, and recording what happened.

The body goes upstream byte for byte; the reply comes back with the upstream's status, headers and body (a
stream is relayed chunk by chunk as it arrives). Once the reply has been passed on, `on_record` gets the
call as a capture record: a stream reassembled, an upstream error with its body, a timeout or a stream cut
halfway as an error with what arrived before it. Nothing here knows about web frameworks or databases.

Whose provider key pays matters. With the operator's key (the upstream config's, used when the caller sends
none in X-Upstream-Authorization), the caller's `OpenAI-Organization` / `OpenAI-Project` headers are not passed
on (the caller would choose which of the operator's organizations is billed), the upstream's account headers
(`openai-organization`, `openai-project`, `anthropic-organization-id`...) are not relayed back, and every piece
of the key an upstream may echo (OpenAI's "Incorrect API key provided: sk-abc***wxyz") is cut from error
bodies, our messages and the record. With the caller's own key, billing headers pass and the caller sees the
upstream's errors as they are; the record is still cleaned of the caller's key. Hop-by-hop headers and cookies
are never relayed: they belong to the connection to the upstream, not to the caller.

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
PASS_REQUEST = ("content-type", "accept", "openai-beta", "user-agent")
BILLING = ("openai-organization", "openai-project")  # passed on only with the caller's own provider key
# response headers never relayed: those the relaying server sets itself, hop-by-hop ones (RFC 9110 7.6.1;
# proxy-* too) and cookies
DROP_RESPONSE = {"content-length", "content-encoding", "server", "date", "connection", "keep-alive", "te", "trailer",
                 "trailers", "transfer-encoding", "upgrade", "set-cookie", "set-cookie2"}
# with the operator's key, the upstream's headers naming the operator's account are not relayed either
ACCOUNT_SUFFIXES = ("-organization", "-organization-id", "-project", "-project-id")
REDACTED = b"[redacted]"
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
                      base_record: dict[str, Any], hide_usage: bool = False) -> Reply:
        """Send upstream and return the reply to relay; `on_record` is called once the call is over with
        `base_record` (what is known before the call: id, model, request, stream, tags...) completed."""
        lent = authorization is None  # the operator's key (if the upstream has one) pays
        out = {k: v for k, v in headers.items() if k in PASS_REQUEST or (not lent and k in BILLING)}
        out["accept-encoding"] = "identity"
        auth = upstream.authorization() if lent else authorization
        if auth:
            out["authorization"] = auth
        key = _bare(auth)
        call = _Call(base_record, time.perf_counter(), on_record, key)
        try:
            response = await self._client().post(upstream.endpoint(path), data=body, headers=out)
        except aiohttp.ConnectionTimeoutError:
            call.finish(None, None, {"type": "upstream_unreachable", "message": "connect timed out"})
            raise UpstreamFailed(502, scrub_text(f"Cannot connect to the upstream at {upstream.url} within "
                                 f"{self.connect_timeout:g} s", key), "upstream_unreachable") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            call.finish(None, None, {"type": "upstream_timeout", "message": f"no reply in {self.timeout:g} s"})
            raise UpstreamFailed(504, f"The upstream did not answer within {self.timeout:g} s", "upstream_timeout") \
                from None
        except aiohttp.ClientError as exc:
            call.finish(None, None, {"type": "upstream_unreachable", "message": f"{type(exc).__name__}: {exc}"})
            raise UpstreamFailed(502, scrub_text(f"Cannot reach the upstream at {upstream.url}: "
                                 f"{type(exc).__name__}", key), "upstream_unreachable") from None
        reply_headers = _relayed(response.headers, lent)
        if response.headers.get("content-type", "").startswith("text/event-stream") and response.status < 300:
            stream = call.relay(response)  # recorded whole, usage included
            return Reply(response.status, reply_headers, stream=without_usage(stream) if hide_usage else stream)
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            call.finish(response.status, None, {"type": "upstream_broken", "message": f"{type(exc).__name__}"})
            raise UpstreamFailed(502, f"The upstream's reply broke off: {type(exc).__name__}", "upstream_broken") \
                from None
        finally:
            response.release()
        if response.status >= 300 and key:  # an error may quote the key: the caller sees the operator's cut
            cleaned = scrub(data, key)
            data = cleaned if lent else data
            call.finish_body(response.status, cleaned)
        else:
            call.finish_body(response.status, data)
        return Reply(response.status, reply_headers, body=data)


def _bare(authorization: str | None) -> str | None:
    """The key in an Authorization value (`Bearer sk-...` -> `sk-...`)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    return rest.strip() or scheme


def _relayed(headers, lent: bool) -> list[tuple[str, str]]:
    """The upstream's response headers that go back to the caller."""
    named = {t.strip().lower() for t in headers.get("connection", "").split(",")}  # hop-by-hop by declaration
    out = []
    for k, v in headers.items():
        low = k.lower()
        if low in DROP_RESPONSE or low in named or low.startswith("proxy-") or \
                (lent and low.endswith(ACCOUNT_SUFFIXES)):
            continue
        out.append((k, v))
    return out


def scrub(data: bytes, key: str | None, shortest: int = 4) -> bytes:
    """`data` with every run of `key`'s first or last characters (`shortest` or more of them) replaced by
    [redacted]: the whole key, and fragments like OpenAI's `sk-abc***wxyz`."""
    if not key or len(key) < shortest:
        return data
    k = key.encode()
    head, tail = k[:shortest], k[-shortest:]
    spans = []
    at = data.find(head)
    while at != -1:  # a prefix of the key: extend forwards as far as the key goes
        end = at + shortest
        while end < len(data) and end - at < len(k) and data[end] == k[end - at]:
            end += 1
        spans.append((at, end))
        at = data.find(head, end)
    at = data.find(tail)
    while at != -1:  # a suffix: extend backwards as far as the key goes
        end = start = at + shortest
        while start > 0 and end - start < len(k) and data[start - 1] == k[len(k) - (end - start) - 1]:
            start -= 1
        spans.append((start, end))
        at = data.find(tail, at + 1)
    if not spans:
        return data
    out, last = bytearray(), 0
    for start, end in sorted(spans):
        if end <= last:
            continue
        if start >= last:
            out += data[last:start] + REDACTED
        last = end
    return bytes(out + data[last:])


def scrub_text(text: str, key: str | None) -> str:
    return scrub(text.encode(), key).decode("utf-8", "replace") if key else text


async def without_usage(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A server-sent-event stream without its usage-only chunk (`"choices": []` and a usage): the one a stream
    sends when `stream_options.include_usage` is set, which the proxy sets itself to price a call."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *events, pending = pending.split(b"\n\n")
        out = b"".join(event + b"\n\n" for event in events if not _usage_only(event))
        if out:
            yield out
    if pending:
        yield pending


def _usage_only(event: bytes) -> bool:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                data = json.loads(line[5:])
            except ValueError:
                return False
            return isinstance(data, dict) and data.get("choices") == [] and data.get("usage") is not None
    return False


class _Call:
    def __init__(self, base: dict[str, Any], t0: float, on_record: Callable[[dict[str, Any]], None],
                 key: str | None = None):
        self.base, self.t0, self.on_record, self.key = base, t0, on_record, key
        self.ttft: float | None = None

    def finish(self, status: int | None, response: dict | None, error: dict | None) -> None:
        latency = (time.perf_counter() - self.t0) * 1000
        if error is not None and self.key:  # no piece of a provider key is written to the log
            text = json.dumps(error)
            cleaned = scrub(text.encode(), self.key)
            if cleaned != text.encode():
                try:
                    error = json.loads(cleaned)
                except ValueError:
                    error = {"message": cleaned.decode("utf-8", "replace")}
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
