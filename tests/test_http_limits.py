"""The server's edges: request bodies capped as they arrive (chunked ones too), uploads streamed to disk under a
cap and never left behind, files at rest private to their user, and an `x-request-id` on every response.

Against a real `tuneforge serve` with 1 MB limits (raw sockets where a body must stay unfinished), and an
in-process app where a fault has to be injected. No model is loaded.
"""

from __future__ import annotations

import io
import json
import re
import socket
import stat
import time

import httpx
import openai
import pytest
from helpers import chat_row
from live_server import Server

REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")
GOOD_ROW = (json.dumps(chat_row("hi", "hello")) + "\n").encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"TUNEFORGE_MAX_BODY_MB": "1", "TUNEFORGE_MAX_UPLOAD_MB": "1"}
    with Server(tmp_path_factory.mktemp("limits") / "data", workers=0, env=env) as srv:
        srv.api_key = srv.key("acme")
        yield srv


def unfinished(server, path: str, content_type: str, body: bytes, *, hang_up: bool = False):
    """POST a chunked body without its last chunk, then read the answer (status, headers, JSON body); with
    `hang_up`, close the connection instead."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.api_key}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    sock.sendall(head)
    for start in range(0, len(body), 64 << 10):
        piece = body[start:start + (64 << 10)]
        sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    if hang_up:
        sock.close()
        return None
    data = b""
    with sock:
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536) or pytest.fail(f"connection closed: {data!r}")
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(headers["content-length"]):
            rest += sock.recv(65536) or pytest.fail("connection closed mid-answer")
    return int(lines[0].split()[1]), headers, json.loads(rest)


def multipart(file: bytes, boundary: str = "tf-boundary") -> tuple[str, bytes]:
    """A form's `purpose` field and the start of its file part (no closing boundary)."""
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode() + file
    return f"multipart/form-data; boundary={boundary}", body


def stored(server) -> list[str]:
    folder = server.data_dir / "files"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_chunked_body_over_the_limit_is_answered_413_before_it_ends(server):
    status, headers, body = unfinished(server, "/v1/chat/completions", "application/json", b"[" + b"1," * (3 << 19))
    assert status == 413 and body["error"]["code"] == "request_too_large", body
    assert REQUEST_ID.fullmatch(headers["x-request-id"])
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # and the server serves on


def test_uploads_are_capped_as_they_arrive_and_never_leave_a_file(server):
    client = server.client(server.api_key)
    before = stored(server)
    status, _, body = unfinished(server, "/v1/files", *multipart(GOOD_ROW * ((3 << 19) // len(GOOD_ROW))))
    assert status == 413 and body["error"]["code"] == "file_too_large", body
    assert stored(server) == before
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("bad.jsonl", io.BytesIO(GOOD_ROW + b"not json\n")), purpose="fine-tune")
    assert bad.value.body["code"] == "invalid_file_format"
    assert stored(server) == before
    unfinished(server, "/v1/files", *multipart(GOOD_ROW * 2000), hang_up=True)  # the client leaves mid-file
    time.sleep(0.5)
    deadline = time.time() + 10
    while stored(server) != before and time.time() < deadline:
        time.sleep(0.1)
    assert stored(server) == before
    assert client.files.list().data == []


def test_files_at_rest_are_private(server, data_dir):
    from tuneforge import paths

    assert not data_dir.exists()
    assert stat.S_IMODE(paths.data_dir().stat().st_mode) == 0o700  # a new data dir is made private
    uploaded = server.client(server.api_key).files.create(file=("ok.jsonl", io.BytesIO(GOOD_ROW)),
                                                          purpose="fine-tune")
    for path in (server.data_dir / "tuneforge.db", server.data_dir / "files",
                 server.data_dir / "files" / f"{uploaded.id}.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


def test_every_response_carries_a_request_id(server):
    auth = {"Authorization": f"Bearer {server.api_key}"}
    answers = [
        httpx.get(server.url + "/v1/models", headers=auth),
        httpx.get(server.url + "/v1/models", headers=auth),
        httpx.get(server.url + "/v1/models"),  # 401
        httpx.get(server.url + "/v1/nowhere", headers=auth),  # 404
        httpx.post(server.url + "/v1/chat/completions", headers=auth, content=b"x" * (2 << 20)),  # 413 at once
    ]
    assert [r.status_code for r in answers] == [200, 200, 401, 404, 413]
    ids = [r.headers.get("x-request-id") or "" for r in answers]
    assert all(REQUEST_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids), ids
    mine = httpx.get(server.url + "/v1/models", headers={**auth, "X-Request-Id": "trace-42.a:b_c"})
    assert mine.headers["x-request-id"] == "trace-42.a:b_c"
    for odd in ("a b", "x" * 200, "<script>"):
        assert REQUEST_ID.fullmatch(httpx.get(server.url + "/v1/models", headers={
            **auth, "X-Request-Id": odd}).headers["x-request-id"])


def test_a_server_error_mid_upload_leaves_nothing_and_is_logged_with_its_request_id(data_dir, monkeypatch, caplog):
    from starlette.responses import StreamingResponse
    from starlette.testclient import TestClient

    from tuneforge.server.app import create_app
    from tuneforge.store import files, projects
    from tuneforge.store.db import Database

    db = Database()
    db.migrate()
    with db.session() as s:
        key = projects.create_key(s, project="acme")

    def broken(_path, **_kw):
        raise RuntimeError("validator bug")

    monkeypatch.setattr(files, "validate_file", broken)
    app = create_app(db, upstreams=None)
    app.add_api_route("/streamed", lambda: StreamingResponse(iter([b"a", b"b"])))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/files", headers={"Authorization": f"Bearer {key}"}, data={"purpose": "fine-tune"},
                        files={"file": ("t.jsonl", GOOD_ROW)})
        streamed = client.get("/streamed")
    assert r.status_code == 500
    assert list((data_dir / "files").iterdir()) == []
    assert REQUEST_ID.fullmatch(r.headers["x-request-id"])
    assert r.headers["x-request-id"] in caplog.text
    assert streamed.text == "ab" and REQUEST_ID.fullmatch(streamed.headers["x-request-id"])
    db.dispose()
