"""The console's fine-tunes pages over plain HTTP (in-process, no worker: jobs stay queued): wrong input is shown
next to its field with everything typed kept, a job is started and cancelled (a second cancel is a conflict, said
on the page), the loss curve is rendered from the job's metrics events, and another project's job is a 404."""

from __future__ import annotations

import json
import re

import pytest
from console_kit import ORIGIN, console_client
from fastapi.testclient import TestClient
from helpers import toy_rows

from tuneforge.console.pages import fine_tunes
from tuneforge.store import jobs

BASE = "smollm2-135m-instruct"


@pytest.fixture
def acme(console_store):
    """The signed-in acme client, with a training file uploaded: its id is `.file_id`."""
    with console_client(console_store.db, console_store.keys["acme"]) as client:
        content = "".join(json.dumps(r) + "\n" for r in toy_rows(8)).encode()
        uploaded = client.post("/v1/files", files={"file": ("toy.jsonl", content)}, data={"purpose": "fine-tune"},
                               headers={"authorization": f"Bearer {client.key}"})
        client.file_id = uploaded.json()["id"]
        yield client


def start(client: TestClient, **fields):
    form = {"csrf_token": client.csrf, "model": BASE, "training_file": client.file_id, "n_epochs": "auto",
            "batch_size": "auto", "learning_rate_multiplier": "auto", **fields}
    return client.post("/fine-tunes", data=form, headers=ORIGIN, follow_redirects=False)


def error_of(html: str, field: str) -> str | None:
    found = re.search(rf'<p class="error" id="f-{field}-error" role="alert">([^<]*)</p>', html)
    return found and found.group(1)


def value_of(html: str, field: str) -> str:
    return re.search(rf'id="f-{field}" name="{field}" type="text" value="([^"]*)"', html).group(1)


def test_wrong_input_is_shown_next_to_its_field_and_nothing_typed_is_lost(acme):
    r = start(acme, n_epochs="abc", batch_size="2", learning_rate_multiplier="0", suffix="my run!", seed="7")
    assert r.status_code == 422
    assert error_of(r.text, "n_epochs").startswith("Enter auto or a number: input should be a valid integer")
    assert "greater than 0" in error_of(r.text, "learning_rate_multiplier")
    assert "should match pattern" in error_of(r.text, "suffix")
    assert error_of(r.text, "batch_size") is None and error_of(r.text, "seed") is None
    assert [value_of(r.text, f) for f in ("n_epochs", "batch_size", "learning_rate_multiplier", "suffix", "seed")] \
        == ["abc", "2", "0", "my run!", "7"]
    assert re.search(rf'<option value="{acme.file_id}" selected>', r.text)
    assert re.search(rf'<option value="{BASE}" selected>', r.text)

    r = start(acme, n_epochs="51")  # within pydantic's reach: its bound
    assert r.status_code == 422 and "less than or equal to 50" in error_of(r.text, "n_epochs")

    r = start(acme, training_file="file-nope", suffix="kept")  # the kind's own check: a file that is not there
    assert r.status_code == 400 and "Could not find file file-nope" in error_of(r.text, "training_file")
    assert '<option value="file-nope" selected>file-nope (not found)</option>' in r.text
    assert value_of(r.text, "suffix") == "kept"

    r = start(acme, model="no-such-model")
    assert r.status_code == 400 and "does not exist" in error_of(r.text, "model")
    r = start(acme, validation_file="ds-nope")
    assert r.status_code == 400 and "ds-nope" in error_of(r.text, "validation_file")

    forged = acme.post("/fine-tunes", data={"model": BASE, "training_file": acme.file_id}, headers=ORIGIN)
    assert forged.status_code == 403  # no CSRF token: nothing started
    assert "No fine-tuning jobs yet" in acme.get("/fine-tunes").text


def test_start_then_cancel_and_a_second_cancel_is_a_conflict_said_on_the_page(acme):
    r = start(acme, n_epochs="2", batch_size="1", learning_rate_multiplier="0.5", seed="3", suffix="exp")
    assert r.status_code == 303
    job_url = r.headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    shown = acme.get(job_url)
    assert shown.status_code == 200 and 'id="ft-status" class="badge queued"' in shown.text
    assert "n_epochs <strong>2</strong>" in shown.text and "learning_rate_multiplier <strong>0.5</strong>" in shown.text
    assert "Cancel fine-tune" in shown.text
    listed = acme.get("/fine-tunes").text
    assert f'href="/fine-tunes/{job_id}"' in listed and "toy.jsonl" in listed

    cancel = {"csrf_token": acme.csrf}
    r = acme.post(f"/fine-tunes/{job_id}/cancel", data=cancel, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == job_url
    shown = acme.get(job_url).text
    assert 'class="badge cancelled"' in shown and "Cancel fine-tune" not in shown and "Job cancelled" in shown

    again = acme.post(f"/fine-tunes/{job_id}/cancel", data=cancel, headers=ORIGIN, follow_redirects=False)
    assert again.status_code == 409
    assert re.search(r'class="error banner" role="alert">Job \S+ has already cancelled', again.text)


def test_a_datasets_splits_are_offered_and_its_train_split_is_trained_on(acme):
    made = acme.post("/v1/datasets", json={"name": "toys", "file_id": acme.file_id, "dedupe": "none",
                                           "test_fraction": 0.25}, headers={"authorization": f"Bearer {acme.key}"})
    ds = made.json()
    form = acme.get("/fine-tunes").text
    assert f'<option value="{ds["id"]}">Dataset toys: 6 train rows ({ds["id"]})</option>' in form
    assert f'<option value="{ds["id"]}">Dataset toys: 2 test rows ({ds["id"]})</option>' in form
    r = start(acme, training_file=ds["id"], validation_file=ds["id"])
    assert r.status_code == 303
    shown = acme.get(r.headers["location"]).text
    assert re.search(r"<dt>Training file</dt><dd><code>file-\w+</code>", shown)  # the train split, written out
    assert re.search(r"<dt>Validation file</dt><dd><code>file-\w+</code>", shown)


def test_the_loss_curve_is_drawn_from_metrics_events_up_to_the_last_event_rendered(console_store, acme):
    db, _, _ = console_store
    job_id = start(acme, n_epochs="1").headers["location"].rsplit("/", 1)[1]
    with db.session() as s:
        for step, loss in ((1, 2.5), (2, 2.0), (3, 1.5)):
            data = {"step": step, "train_loss": loss, "total_steps": 3, "epoch": step / 3, "tokens_per_s": 100.0}
            if step == 3:
                data["valid_loss"] = 1.8
            jobs.add_event(s, job_id, f"Step {step}/3", type="metrics", data=data)
    html = acme.get(f"/fine-tunes/{job_id}").text
    chart = json.loads(re.search(r'<script type="application/json" id="ft-data">(.*?)</script>', html, re.S).group(1))
    assert chart["train"] == [[1, 2.5], [2, 2.0], [3, 1.5]] and chart["valid"] == [[3, 1.8]]
    assert chart["active"] and chart["job_id"] == job_id and chart["follow_events"]
    with db.session() as s:
        newest, _ = jobs.events(s, job_id, after=None, limit=1)
        assert chart["last_seq"] == newest[0].seq  # the live stream takes over after this event
    assert "Step 3 of 3" in html and "Step 2/3" in html
    outcome = acme.get(f"/fine-tunes/{job_id}/outcome")
    assert outcome.status_code == 200 and 'id="ft-outcome"' in outcome.text and "<html" not in outcome.text


def test_jobs_and_events_are_shown_a_page_at_a_time(acme, monkeypatch):
    monkeypatch.setattr(fine_tunes, "PAGE", 2)
    monkeypatch.setattr(fine_tunes, "EVENTS_PAGE", 1)
    made = {start(acme).headers["location"].rsplit("/", 1)[1] for _ in range(3)}
    first = acme.get("/fine-tunes").text
    older = re.search(r'href="(/fine-tunes\?after=[^"]+)">Older jobs', first).group(1)
    second = acme.get(older).text
    on_first, on_second = ({j for j in made if f'href="/fine-tunes/{j}"' in html} for html in (first, second))
    assert len(on_first) == 2 and on_second == made - on_first  # newest first, each job once
    assert "Older jobs" not in second and ">Newest<" in second
    made = sorted(made)

    page = acme.get(f"/fine-tunes/{made[0]}").text
    assert "Files validated" in page and "Validating training file" not in page
    older = re.search(r'href="(/fine-tunes/[^"]+\?events_after=[^"]+)">Older events', page).group(1)
    page = acme.get(older.replace("&amp;", "&")).text
    assert "Validating training file" in page and "Files validated" not in page
    assert '"follow_events": false' in page  # an older page does not take live events


def test_another_projects_job_is_not_found_and_not_listed(console_store, acme):
    db, keys, _ = console_store
    job_id = start(acme).headers["location"].rsplit("/", 1)[1]
    with console_client(db, keys["globex"]) as globex:
        assert job_id not in globex.get("/fine-tunes").text
        for path in (f"/fine-tunes/{job_id}", f"/fine-tunes/{job_id}/outcome", f"/jobs/{job_id}/live"):
            r = globex.get(path)
            assert r.status_code == 404 and "text/html" in r.headers["content-type"], path
            assert "Not found" in r.text
        r = globex.post(f"/fine-tunes/{job_id}/cancel", data={"csrf_token": globex.csrf}, headers=ORIGIN)
        assert r.status_code == 404
        r = globex.post("/fine-tunes", data={"csrf_token": globex.csrf, "model": BASE, "training_file": acme.file_id},
                        headers=ORIGIN)
        assert r.status_code == 400 and "Could not find file" in error_of(r.text, "training_file")
    assert 'class="badge queued"' in acme.get(f"/fine-tunes/{job_id}").text


def test_a_dpo_job_is_started_from_the_form_on_preference_pairs(console_store, acme):
    pairs = [{"input": {"messages": r["messages"][:-1]}, "preferred_output": [r["messages"][-1]],
              "non_preferred_output": [{"role": "assistant", "content": "no"}]} for r in toy_rows(4)]
    content = "".join(json.dumps(p) + "\n" for p in pairs).encode()
    prefs = acme.post("/v1/files", files={"file": ("prefs.jsonl", content)}, data={"purpose": "fine-tune"},
                      headers={"authorization": f"Bearer {acme.key}"}).json()["id"]

    r = start(acme, training_file=prefs)  # supervised on pairs: said next to the file, the choice kept
    assert r.status_code == 400 and "train them with method" in error_of(r.text, "training_file")
    r = start(acme, training_file=prefs, method="dpo", beta="5")
    assert r.status_code == 422 and "less than or equal to 2" in error_of(r.text, "beta")
    assert re.search(r'<option value="dpo" selected>', r.text) and value_of(r.text, "beta") == "5"

    r = start(acme, training_file=prefs, method="dpo", beta="0.3", n_epochs="2")
    assert r.status_code == 303
    with console_store.db.session() as s:
        spec = fine_tunes.KIND.spec(jobs.get(s, r.headers["location"].rsplit("/", 1)[1],
                                             project_id=console_store.ids["acme"]))
    assert (spec.method, spec.train_config["method"], spec.train_config["beta"]) == ("dpo", "dpo", 0.3)
    assert spec.train_config["epochs"] == 2
