"""The console's evals pages over plain HTTP (TestClient, a worker run in-process, no model loaded: the models
compared are the rows' own answers and an answer column): form errors next to their fields with nothing lost,
a run's results and its rows filtered and paged, and another project's evals and runs answered 404."""

from __future__ import annotations

import json
import re

from console_kit import console_client
from fastapi.testclient import TestClient

from tuneforge.store import files
from tuneforge.worker.loop import Worker


def rows(n: int) -> list[dict]:
    """Every third row's `guess` differs from its reference answer."""
    return [{"messages": [{"role": "user", "content": f"q{i} <b>"}, {"role": "assistant", "content": f"a{i}"}],
             "guess": f"a{i}" if i % 3 else f"wrong{i}"} for i in range(n)]


def jsonl(data: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in data).encode()


def create(client: TestClient, upload: bytes | None = None, **fields) -> object:
    data = {"csrf_token": client.csrf, "source": "file", "graders": ["exact"], **fields}
    files = {"upload": ("test.jsonl", upload, "application/jsonl")} if upload is not None else None
    return client.post("/evals", data=data, files=files, follow_redirects=False)


def error_of(html: str, name: str) -> str:
    found = re.search(rf'id="f-{name}-error" role="alert">([^<]*)<', html)
    return found.group(1) if found else ""


def test_form_errors_are_shown_next_to_their_fields_and_nothing_typed_is_lost(acme):
    r = create(acme, name="my eval <x>", other_models="", max_tokens="12", judge_criteria="be kind")
    assert r.status_code == 400
    assert "Choose at least one model" in error_of(r.text, "models")
    assert 'value="my eval &lt;x&gt;"' in r.text and 'value="12"' in r.text and ">be kind</textarea>" in r.text

    r = create(acme, models=["answers"], graders=["regex"])
    assert r.status_code == 400 and "pattern" in error_of(r.text, "regex_pattern")
    r = create(acme, models=["answers"], limit="many")
    assert r.status_code == 400 and "whole number" in error_of(r.text, "limit")
    r = create(acme, models=["answers"], file_id="")
    assert r.status_code == 400 and "uploaded file" in error_of(r.text, "source")

    # errors from the API's own checks (accept), mapped to their fields; the checked boxes stay checked
    r = create(acme, jsonl(rows(3)), models=["answers"], judge="no-such-judge", graders=[])
    assert r.status_code == 400 and "at least two models" in error_of(r.text, "models")
    assert 'value="answers" checked' in r.text and 'value="no-such-judge"' in r.text
    kept = re.search(r'<option value="(file-[^"]+)" selected', r.text)
    assert kept, "the uploaded file is kept and chosen, so it need not be sent again"
    r = create(acme, models=["answers", "column:guess"], judge="no-such-judge", graders=[], file_id=kept.group(1))
    assert r.status_code == 400 and "no-such-judge" in error_of(r.text, "judge")
    r = create(acme, models=["answers", "column:guess"], judge="no-such-judge", reference="nobody", graders=[],
               file_id=kept.group(1))
    assert r.status_code == 400 and "nobody" in error_of(r.text, "reference")
    r = create(acme, models=["answers", "nope-model"], file_id=kept.group(1))
    assert r.status_code == 400 and "nope-model" in error_of(r.text, "models")
    r = create(acme, b"not json\n", models=["answers"])
    assert r.status_code == 400 and "rows an eval cannot use" in error_of(r.text, "source")
    listing = acme.get("/evals").text
    assert "/runs/evalrun_" not in listing and "No evals yet" in listing, "a refused run leaves no eval behind"


def test_a_run_shows_its_results_and_rows_filtered_to_disagreements(acme, console_store):
    r = create(acme, jsonl(rows(45)), name="answers vs guesses", models=["answers"], other_models="column:guess",
               graders=["exact"])
    assert r.status_code == 303, r.text
    run_url = r.headers["location"]
    eval_id, run_id = re.fullmatch(r"/evals/(eval_[^/]+)/runs/(evalrun_[^/]+)", run_url).groups()
    live = acme.get(run_url)
    assert live.status_code == 200 and 'id="run-live"' in live.text and f'data-job="{run_id}"' in live.text
    assert acme.get(run_url + "/rows").status_code == 409  # no rows before the run ends

    assert Worker(console_store.db, worker_id="w").run_one()
    done = acme.get(run_url)
    assert 'id="run-live"' not in done.text and "<h2>Scores</h2>" in done.text and "<svg" in done.text
    assert "Win rates" in done.text and "Ranking" in done.text and "90 answers" in done.text
    assert acme.get(run_url + "/results").text.count("<h2>Scores</h2>") == 1
    assert acme.get(run_url + "/report.html").text.startswith("<!DOCTYPE html>")
    assert acme.get(run_url + "/report.json").json()["test_sets"][0]["rows"] == 45

    every = acme.get(run_url + "/rows")
    assert every.text.count("<div class='row'") == 20 and "Rows 1–20 of the 45 in the run" in every.text
    assert "q0 &lt;b&gt;" in every.text and "q0 <b>" not in every.text
    following = acme.get(run_url + "/rows?after=19")
    assert "Rows 21–40" in following.text and ">#20 " in following.text
    differ = acme.get(run_url + "/rows?show=differ")
    assert differ.text.count("<div class='row' data-differ='1'") == 15 and "data-differ='0'" not in differ.text
    assert "Rows 1–15 of the 15 that match (45 in the run)" in differ.text and "Next rows" not in differ.text

    listing = acme.get("/evals")
    assert "answers vs guesses" in listing.text and run_url in listing.text
    assert run_url in acme.get(f"/evals/{eval_id}").text


def test_a_row_limit_runs_the_first_rows_only(acme):
    uploaded = create(acme, jsonl(rows(10)), models=["answers"], judge="marker", graders=[])
    file_id = re.search(r'<option value="(file-[^"]+)" selected', uploaded.text).group(1)
    on_disk = sorted(p.name for p in files.files_dir().iterdir())
    refused = create(acme, file_id=file_id, models=["answers", "nope"], limit="4")
    assert refused.status_code == 400 and sorted(p.name for p in files.files_dir().iterdir()) == on_disk

    r = create(acme, file_id=file_id, models=["answers", "column:guess"], limit="4")
    assert r.status_code == 303, r.text
    page = acme.get(r.headers["location"]).text
    assert "test.jsonl, first 4 rows (4 rows)" in page
    r = create(acme, file_id=file_id, models=["answers", "column:guess"], limit="10")
    assert "test set test.jsonl (10 rows)" in acme.get(r.headers["location"]).text  # the whole file: no copy


def test_another_projects_evals_and_runs_are_not_found(console_store, acme):
    r = create(acme, jsonl(rows(3)), models=["answers", "column:guess"])
    run_url = r.headers["location"]
    eval_url = run_url.split("/runs/")[0]
    with console_client(console_store.db, console_store.keys["globex"], app=acme.app) as globex:
        for url in (eval_url, run_url, run_url + "/rows", run_url + "/results", run_url + "/report.json"):
            other = globex.get(url)
            assert other.status_code == 404 and "Not found" in other.text, url
            assert other.headers["content-type"].startswith("text/html")
        assert run_url not in globex.get("/evals").text
        cancel = globex.post(run_url + "/cancel", data={"csrf_token": globex.csrf}, follow_redirects=False)
        assert cancel.status_code == 404
    assert acme.post(run_url + "/cancel", data={}, follow_redirects=False).status_code == 403  # no CSRF token
    assert acme.post(run_url + "/cancel", data={"csrf_token": acme.csrf}, follow_redirects=False).status_code == 303
    assert 'class="badge cancelled"' in acme.get(run_url).text
