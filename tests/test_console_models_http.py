"""The console's models pages over plain HTTP (in-process, no worker: jobs stay queued): the models listed with
their jobs, the merge form's YAML preview for mergekit methods, LoRA adapter merges and a YAML of one's own, a
merge refused field by field (everything typed kept) and then started, merge and bake-off pages with their
reports served sandboxed, bounded lists, and another project's ids answering 404."""

from __future__ import annotations

import html
import re
from pathlib import Path

from console_kit import ORIGIN, console_client
from fastapi.testclient import TestClient

from tuneforge.store import jobs, models

BASES = ("smollm2-135m-instruct", "gemma-3-270m")


def merge_form(client: TestClient, **fields) -> dict:
    return {"csrf_token": client.csrf, "name": "", "method": "slerp", "base_model": BASES[0], "model_0": BASES[1],
            "weight_0": "1", "density_0": "", "t": "0.5", "dtype": "float32", "config_yaml": "", **fields}


def preview(client: TestClient, **fields) -> str:
    form = merge_form(client, **fields)
    r = client.post("/models/merge/preview", data=form, headers={**ORIGIN, "x-csrf-token": client.csrf})
    assert r.status_code == 200
    return html.unescape(r.text)


def yaml_of(text: str) -> str:
    return html.unescape(re.search(r'data-testid="merge-yaml"><code>(.*?)</code>', text, re.S).group(1))


def error_of(text: str, field: str) -> str | None:
    found = re.search(rf'<p class="error" id="f-{field}-error" role="alert">([^<]*)</p>', text)
    return found and html.unescape(found.group(1))


def test_the_preview_follows_the_method_and_says_what_is_missing(acme):
    page = acme.get("/models").text
    assert all(f"<code>{b}</code>" in page for b in BASES) and "SLERP (slerp)" in page and "ties (adapters)" in page
    slerp = preview(acme)
    assert yaml_of(slerp).splitlines() == ["merge_method: slerp", f"base_model: {BASES[0]}", "models:",
                                           f"- model: {BASES[1]}", "parameters:", "  t: 0.5", "dtype: float32"]
    assert "ready to start" in slerp and "needs a base model" in slerp
    ties = preview(acme, method="ties", model_1=BASES[0], weight_1="", density_0="0.5")
    assert "density: 0.5" in yaml_of(ties) and "t: 0.5" not in yaml_of(ties)
    assert "ties needs a weight for each model" not in ties  # the base takes no weight
    linear = preview(acme, method="linear", model_1="merge:other", weight_1="")
    assert "linear needs a weight for each model." in linear and "base_model" not in yaml_of(linear)
    assert "exactly 2 models" in preview(acme, model_1="merge:third")
    assert "needs a base model" in preview(acme, base_model="")
    lora = preview(acme, method="lora:dare_ties", model_0="ft:a", model_1="ft:b", weight_1="2", density_0="0.4")
    assert yaml_of(lora).splitlines() == ["adapters:", "- ft:a", "- ft:b", "weights:", "- 1.0", "- 2.0",
                                          "method: dare_ties", "density: 0.4"]
    assert "needs a density" in preview(acme, method="lora:ties", model_0="ft:a", model_1="ft:b")
    own = preview(acme, config_yaml="merge_method: linear\nmodels:\n  - model: x\n    parameters: {weight: 1}\n")
    assert "merge_method: linear" in yaml_of(own) and "Your own YAML is used" in own
    assert "not valid YAML" in preview(acme, config_yaml="merge_method: [")
    assert "unknown merge_method" in preview(acme, config_yaml="merge_method: nope\nmodels:\n  - model: x\n")
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nmerge_method: linear\n"
    assert "anchors and aliases" in preview(acme, config_yaml=bomb)
    assert "at most 65,536" in preview(acme, config_yaml="#" * 70_000)
    forged = acme.post("/models/merge/preview", data=merge_form(acme), headers={**ORIGIN, "x-csrf-token": "no"})
    assert forged.status_code == 403


def test_a_merge_is_refused_field_by_field_then_started(acme, console_store):
    r = acme.post("/models/merge", data=merge_form(acme, t="abc", dtype="float8"), headers=ORIGIN)
    assert r.status_code == 422
    assert error_of(r.text, "name").startswith("Name the merged model")
    assert error_of(r.text, "t") == "'abc' is not a number." and "Choose one of" in error_of(r.text, "dtype")
    assert f'value="{BASES[1]}"' in r.text and 'value="abc"' in r.text  # what was typed is kept
    r = acme.post("/models/merge", data=merge_form(acme, name="Bad Name"), headers=ORIGIN)
    assert r.status_code == 400 and "lowercase letters" in error_of(r.text, "name")
    r = acme.post("/models/merge", data=merge_form(acme, name="mix", model_0="ft:nope"), headers=ORIGIN)
    assert r.status_code == 404 and "`ft:nope` does not exist" in html.unescape(r.text)
    r = acme.post("/models/merge", data=merge_form(acme, name="mix", method="lora:linear", model_0=BASES[0],
                                                     model_1=BASES[1]), headers=ORIGIN)
    assert r.status_code == 400 and "is not a LoRA fine-tune" in html.unescape(r.text)
    r = acme.post("/models/merge", data=merge_form(acme, name="mix"), headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/models/merges/merge-")
    page = html.unescape(acme.get(r.headers["location"]).text)
    assert "merge:mix" in page and "merge_method: slerp" in page and "queued" in page and "Cancel the merge" in page
    assert "merge:mix" in acme.get("/models").text
    again = acme.post("/models/merge", data=merge_form(acme, name="mix"), headers=ORIGIN)
    assert again.status_code == 409 and "already exists or is being made" in error_of(again.text, "name")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    assert acme.post(f"/models/merges/{job_id}/cancel", data={"csrf_token": acme.csrf}, headers=ORIGIN,
                     follow_redirects=False).status_code == 303
    done = acme.post(f"/models/merges/{job_id}/cancel", data={"csrf_token": acme.csrf}, headers=ORIGIN)
    assert done.status_code == 409 and "already cancelled" in done.text


def test_models_are_listed_with_their_jobs_a_page_at_a_time(acme, console_store, monkeypatch):
    from tuneforge.console.pages import models as page_module

    db, _, ids = console_store
    monkeypatch.setattr(page_module, "PAGE", 2)
    with db.session() as s:
        for i in range(3):
            job = jobs.submit(s, project_id=ids["acme"], kind="fine_tune", spec={})
            models.add_fine_tune(s, model_id=f"ft:tiny:acme:s{i}:{job.id}", project_id=ids["acme"], job_id=job.id,
                                 base="tiny", path="/nowhere")
    page = acme.get("/models").text
    assert page.count("<tr><td><code>ft:tiny:acme:s") == 2 and page.count('<option value="ft:tiny:acme:s') == 3
    older = html.unescape(re.search(r'href="(/models\?ft_after=[^"]+)">Older fine-tuned', page).group(1))
    rest = acme.get(older).text
    assert "ft:tiny:acme:s0" in rest and 'href="/fine-tunes/' in rest and "Older fine-tuned" not in rest


def test_merge_and_bakeoff_pages_show_their_reports_sandboxed(acme, console_store):
    db, keys, ids = console_store
    with db.session() as s:
        bake = jobs.submit(s, project_id=ids["acme"], kind="bakeoff",
                           spec={"bases": list(BASES), "datasets": ["ds-x"], "judge": "judge-marker"})
        search = jobs.submit(s, project_id=ids["acme"], kind="merge", spec={
            "model": "merge:best", "type": "model", "method": "linear", "config": {"merge_method": "linear"}})
        for job, name in ((bake, "report.html"), (search, "search.html")):
            Path(job.out_dir).mkdir(parents=True, exist_ok=True)
            (Path(job.out_dir) / name).write_text("<!doctype html><title>r</title><p>THE REPORT</p>")
    page = acme.get(f"/models/bakeoffs/{bake.id}").text
    assert "judge-marker" in page and 'href="/datasets/ds-x"' in page and "Cancel the bake-off" in page
    assert acme.get(f"/models/bakeoffs/{bake.id}/report.html").status_code == 409  # not succeeded yet
    with db.session() as s:
        jobs.get(s, bake.id, project_id=ids["acme"]).status = "succeeded"
    page = acme.get(f"/models/bakeoffs/{bake.id}").text
    assert f'<iframe class="report" src="/models/bakeoffs/{bake.id}/report.html" sandbox="allow-scripts"' in page
    for url in (f"/models/bakeoffs/{bake.id}/report.html", f"/models/merges/{search.id}/search.html"):
        report = acme.get(url)
        assert "THE REPORT" in report.text and report.headers["content-security-policy"].startswith("sandbox")
    assert 'src="/models/merges/' + search.id + '/search.html"' in acme.get(f"/models/merges/{search.id}").text
    with console_client(db, keys["globex"]) as globex:
        for url in (f"/models/bakeoffs/{bake.id}", f"/models/bakeoffs/{bake.id}/report.html",
                    f"/models/merges/{search.id}", f"/models/merges/{search.id}/search.html",
                    f"/models/merges/{bake.id}", "/models/bakeoffs/bakeoff-nope"):
            r = globex.get(url)
            assert r.status_code == 404 and "text/html" in r.headers["content-type"], url
            assert "THE REPORT" not in r.text
        for url in (f"/models/merges/{search.id}/cancel", f"/models/bakeoffs/{bake.id}/cancel"):
            assert globex.post(url, data={"csrf_token": globex.csrf}, headers=ORIGIN).status_code == 404
        assert bake.id not in globex.get("/models").text


def test_a_merge_search_out_of_bounds_is_a_400_naming_its_field(acme):
    """`/v1/merges`' request model is looser than the search spec it becomes: the spec's bounds answer 400."""
    config = {"merge_method": "linear", "models": [{"model": BASES[0], "parameters": {"weight": "$w"}}]}
    r = acme.post("/v1/merges", headers={"authorization": f"Bearer {acme.key}"},
                  json={"name": "x", "config": config, "search": {"params": {"w": [1.0]}, "datasets": ["ds-1"],
                                                                  "trials": -1}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "search.trials"
