"""The console's datasets pages over plain HTTP (in-process, no worker): a JSONL upload with bad lines shows each as
`line N: field: ...` beside the file field and keeps nothing (no file, no dataset, no bytes on disk), wrong settings
are shown beside their fields with what was typed kept, a good upload makes a dataset whose page lists its entries
with their lineage (log links for datasets made from request logs), pruning rules are edited and exported, a
relabel is accepted and cancelled, and another project's dataset is a 404 everywhere."""

from __future__ import annotations

import html
import json
import re
import time

from console_kit import ORIGIN, console_client
from fastapi.testclient import TestClient
from helpers import chat_row
from sqlalchemy import func, select

from tuneforge.limits import Limits
from tuneforge.server.deps import Settings
from tuneforge.store.tables import Dataset, File

GOOD = [chat_row(f"question {i}?", f"answer {i}", system="You are terse.") for i in range(6)]


def jsonl(rows: list) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def upload(client: TestClient, content: bytes, *, filename: str = "data.jsonl", token: str | None = None, **fields):
    form = {"csrf_token": client.csrf if token is None else token, "name": "support", "dedupe": "none",
            "test_fraction": "0.25", "sample": "", "label": "", "pruning_rule": "", **fields}
    return client.post("/datasets/upload", data=form, files={"file": (filename, content, "application/jsonl")},
                       headers=ORIGIN, follow_redirects=False)


def counts(db) -> tuple[int, int]:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Dataset)), s.scalar(select(func.count()).select_from(File))


def leftovers(data_dir) -> list:
    folder = data_dir / "files"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def error_of(text: str, field: str) -> str | None:
    found = re.search(rf'<p class="error" id="f-{field}-error" role="alert">([^<]*)</p>', text)
    return found and html.unescape(found.group(1))


def test_bad_lines_are_shown_by_number_and_nothing_is_kept(acme, console_store, data_dir):
    bad = [GOOD[0], {"messages": [{"role": "user", "content": "hi"}]}, "{not json", GOOD[1],
           {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    r = upload(acme, jsonl(bad), name="my support set", test_fraction="0.3")
    assert r.status_code == 422
    problems = re.findall(r"<li>(line \d+: [^<]*)</li>", r.text)
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 5"]
    assert "no assistant message" in problems[0] and "messages[0].role" in problems[2]
    assert "3 lines of data.jsonl cannot be used" in r.text
    assert 'value="my support set"' in r.text and 'value="0.3"' in r.text  # what was typed is kept
    assert counts(console_store.db) == (0, 0) and leftovers(data_dir) == []


def test_wrong_settings_are_shown_beside_their_fields_with_the_file_checked_too(acme, console_store, data_dir):
    r = upload(acme, jsonl([GOOD[0], "[]"]), name=" ", test_fraction="abc", sample="0", label="nope",
               pruning_rule="x" * 50_001)
    assert r.status_code == 422
    assert error_of(r.text, "name").startswith("Name the dataset")
    assert "'abc' is not a number" in error_of(r.text, "test_fraction")
    assert "pruning_rule" in r.text and "at most 50,000" in r.text
    assert "line 2:" in r.text
    r = upload(acme, jsonl(GOOD), test_fraction="1.5", label="category")
    assert "test_fraction must be at least 0 and below 1" in error_of(r.text, "test_fraction")
    r = upload(acme, jsonl(GOOD), label="category")
    assert "write tag.KEY" in error_of(r.text, "label")
    r = upload(acme, jsonl(GOOD), filename="")
    assert r.status_code == 422 and "Choose a JSONL file" in r.text
    assert counts(console_store.db) == (0, 0) and leftovers(data_dir) == []


def test_a_good_upload_makes_a_dataset_with_entries_and_lineage(acme, console_store):
    r = upload(acme, jsonl(GOOD), pruning_rule="You are terse.\r\n")  # as a textarea sends it
    assert r.status_code == 303
    page = acme.get(r.headers["location"])
    assert page.status_code == 200
    assert "support" in page.text and "question 5?" in page.text and "answer 5" in page.text
    file_id = re.search(r"(file-[A-Za-z0-9]+) line 6", page.text).group(1)
    assert page.text.count(f"{file_id} line") == 6
    listing = acme.get("/datasets").text
    assert "support" in listing and f"upload {file_id}" in listing
    ds_id = r.headers["location"].rsplit("/", 1)[1]
    exported = acme.get(f"/datasets/{ds_id}/export", params={"split": "train"})
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert len(rows) == 4 and all(m["role"] != "system" for row in rows for m in row["messages"])  # pruned
    assert counts(console_store.db) == (1, 1)


def test_pruning_rules_are_set_bounded_and_applied_to_the_export(acme):
    ds_id = upload(acme, jsonl(GOOD)).headers["location"].rsplit("/", 1)[1]
    r = acme.post(f"/datasets/{ds_id}/pruning", data={"csrf_token": acme.csrf, "rule": ["You are terse.", "", "?"]},
                  headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303
    page = acme.get(r.headers["location"]).text
    assert "Pruning rules saved." in page and ">You are terse.</textarea>" in page and ">?</textarea>" in page
    lines = [json.loads(line) for line in acme.get(f"/datasets/{ds_id}/export").text.splitlines()]
    assert lines[0]["messages"] == [{"role": "user", "content": "question 0"}, {"role": "assistant",
                                                                                  "content": "answer 0"}]
    too_many = acme.post(f"/datasets/{ds_id}/pruning", data={"csrf_token": acme.csrf, "rule": ["r"] * 33},
                         headers=ORIGIN)
    assert too_many.status_code == 422 and "at most 32" in too_many.text
    assert too_many.text.count(">r</textarea>") == 33  # nothing typed is lost
    assert ">You are terse.</textarea>" not in too_many.text
    assert acme.get(f"/datasets/{ds_id}").text.count(">?</textarea>") == 1  # and nothing was saved


def test_relabel_is_accepted_followed_and_cancelled(acme, console_store, monkeypatch):
    ds_id = upload(acme, jsonl(GOOD)).headers["location"].rsplit("/", 1)[1]
    form = {"csrf_token": acme.csrf, "model": "", "name": ""}
    r = acme.post(f"/datasets/{ds_id}/relabel", data=form, headers=ORIGIN)
    assert r.status_code == 422 and error_of(r.text, "model").startswith("Name the teacher")
    r = acme.post(f"/datasets/{ds_id}/relabel", data={**form, "model": "gpt-4o"}, headers=ORIGIN)
    assert r.status_code == 400 and "no upstream serves" in error_of(r.text, "model")
    assert 'value="gpt-4o"' in r.text
    monkeypatch.setenv("TUNEFORGE_UPSTREAM_URL", "http://127.0.0.1:9/v1")
    r = acme.post(f"/datasets/{ds_id}/relabel", data={**form, "model": "gpt-4o", "name": "by 4o"}, headers=ORIGIN,
                  follow_redirects=False)
    assert r.status_code == 303
    page = acme.get(r.headers["location"]).text
    assert "by 4o" in page and "relabeling" in page and 'id="relabel-live" data-job="relabeljob-' in page
    assert f'href="/datasets/{ds_id}"' in page  # its parent
    new_id = r.headers["location"].rsplit("/", 1)[1]
    assert acme.get(f"/datasets/{new_id}/export").status_code == 409  # not ready: said on an HTML page
    cancel = {"csrf_token": acme.csrf}
    stopped = acme.post(f"/datasets/{new_id}/cancel", data=cancel, headers=ORIGIN, follow_redirects=False)
    assert stopped.status_code == 303
    again = acme.post(f"/datasets/{new_id}/cancel", data=cancel, headers=ORIGIN)
    assert again.status_code == 409 and "only a dataset being relabeled can be cancelled" in again.text


def test_datasets_from_request_logs_link_each_entry_to_its_log(acme):
    bearer = {"authorization": f"Bearer {acme.key}"}
    records = [{"id": f"log-{i}", "model": "gpt-4o", "started_at": time.time() - i, "status": 200,
                "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"q{i}"}]},
                "response": {"choices": [{"message": {"role": "assistant", "content": f"a{i}"}}]}}
               for i in range(3)]
    assert acme.post("/v1/logs", json={"logs": records}, headers=bearer).status_code == 200
    ds = acme.post("/v1/datasets", json={"name": "from logs", "dedupe": "none"}, headers=bearer).json()
    page = acme.get(f"/datasets/{ds['id']}").text
    assert all(f'<a href="/logs/log-{i}">log log-{i}</a>' in page for i in range(3))
    assert "request logs" in acme.get("/datasets").text


def test_pages_are_bounded(acme, monkeypatch):
    from tuneforge.console.pages import dataset_detail, datasets

    monkeypatch.setattr(datasets, "PAGE", 2)
    monkeypatch.setattr(dataset_detail, "ENTRIES_PAGE", 4)
    ids = [upload(acme, jsonl(GOOD), name=f"set {i}").headers["location"].rsplit("/", 1)[1] for i in range(3)]
    first = acme.get("/datasets").text
    older = acme.get(html.unescape(re.search(r'href="(/datasets\?after=[^"]+)">Older datasets', first).group(1)))
    shown = [[i for i in range(3) if f">set {i}</a>" in text] for text in (first, older.text)]
    assert len(shown[0]) == 2 and sorted(shown[0] + shown[1]) == [0, 1, 2]  # (made in the same second: any order)
    assert "Older datasets" not in older.text
    page = acme.get(f"/datasets/{ids[0]}").text
    assert page.count('<td class="num">') == 4 and f"/datasets/{ids[0]}?after=3" in page
    rest = acme.get(f"/datasets/{ids[0]}", params={"after": 3}).text
    assert rest.count('<td class="num">') == 2 and "Next entries" not in rest
    assert acme.get(f"/datasets/{ids[0]}", params={"split": "valid"}).status_code == 400
    assert acme.get(f"/datasets/{ids[0]}", params={"after": -1}).status_code == 400


def test_uploads_over_the_cap_are_refused_beside_the_field(console_store, data_dir):
    db, keys, _ = console_store
    with console_client(db, keys["acme"], Settings(limits=Limits(max_body_mb=2, max_upload_mb=1))) as client:
        big = jsonl([chat_row("x" * 1000, "y")] * 1100)  # about 1.2 MB
        r = upload(client, big)
        assert r.status_code == 413 and "over the 1 MB upload limit" in r.text
        assert 'data-max-bytes="1048576"' in r.text
        assert counts(db) == (0, 0) and leftovers(data_dir) == []


def test_forgery_and_other_projects_are_refused(acme, console_store):
    db, keys, _ = console_store
    ds_id = upload(acme, jsonl(GOOD)).headers["location"].rsplit("/", 1)[1]
    assert upload(acme, jsonl(GOOD), token="forged").status_code == 403
    other_site = acme.post("/datasets/upload", data={"csrf_token": acme.csrf, "name": "x"},
                           files={"file": ("a.jsonl", jsonl(GOOD))}, headers={"origin": "http://evil.example"})
    assert other_site.status_code == 403
    assert counts(db) == (1, 1)
    with console_client(db, keys["globex"]) as globex:
        for path in (f"/datasets/{ds_id}", f"/datasets/{ds_id}/export"):
            r = globex.get(path)
            assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "support" not in r.text
        for path, form in ((f"/datasets/{ds_id}/pruning", {"rule": "x"}), (f"/datasets/{ds_id}/relabel",
                                                                          {"model": "m"}),
                           (f"/datasets/{ds_id}/cancel", {})):
            r = globex.post(path, data={"csrf_token": globex.csrf, **form}, headers=ORIGIN)
            assert r.status_code == 404, path
        assert ds_id not in globex.get("/datasets").text
