"""Job kinds and the models store: kinds name their own ids and wording, the queue is kind-neutral, one
module answers which models a project has, and training options are declared once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tuneforge.errors import NotFound, UserError
from tuneforge.jobs import fine_tune, registry
from tuneforge.store import jobs, models, projects
from tuneforge.store.tables import JobEvent
from tuneforge.training.config import TrainConfig


def test_registry_lists_valid_names_for_an_unknown_kind():
    assert {"fine_tune", "relabel"} <= set(registry.names())
    assert registry.get("fine_tune") is fine_tune.KIND
    with pytest.raises(UserError, match="unknown job kind 'frobnicate': use one of .*fine_tune.*relabel"):
        registry.get("frobnicate")


def _events(s, job_id: str) -> list[JobEvent]:
    return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


def test_ids_wording_and_not_found_come_from_the_kind(db):
    with db.session() as s:
        project = projects.get_or_create(s, "p")
        ft = jobs.submit(s, project_id=project.id, kind="fine_tune", spec={})
        relabel = jobs.submit(s, project_id=project.id, kind="relabel", spec={})
        assert ft.id.startswith("ftjob-") and relabel.id.startswith("relabeljob-")
        assert [e.message for e in _events(s, ft.id)] == [
            "Validating training file", "Files validated, moving job to queued state"]
        assert [e.message for e in _events(s, relabel.id)] == ["Job created", "Job queued"]
        assert all(e.id.startswith("ftevent-") for e in _events(s, ft.id))
        assert not any(e.id.startswith("ft") for e in _events(s, relabel.id))
        with pytest.raises(NotFound, match=f"No fine-tuning job found with id {relabel.id}") as err:
            jobs.get(s, relabel.id, project_id=project.id, kind="fine_tune")
        assert err.value.param == "fine_tuning_job_id"
        with pytest.raises(NotFound, match=f"No relabel job found with id {ft.id}"):
            jobs.cancel(s, ft.id, project_id=project.id, kind="relabel")
        assert [j.id for j in jobs.list_(s, project_id=project.id, after=None, limit=10, kind="relabel")[0]] == [
            relabel.id]


def test_api_hyperparameters_are_the_train_config_fields_declared_for_it():
    declared = TrainConfig.hyperparameters()
    assert {"weights", "beta", "lora_rank", "packing", "skip_invalid"} <= set(declared)
    assert not {"model", "data", "out", "resume", "report_to", "epochs"} & set(declared)
    for name in declared:  # each one is accepted as a hyperparameter, with its default
        default = TrainConfig.model_fields[name].default
        assert fine_tune.train_config({name: default}, seed=0)[name] == default
    with pytest.raises(UserError) as unknown:
        fine_tune.train_config({"resume": True}, seed=0)
    assert unknown.value.param == "hyperparameters.resume"
    assert str(unknown.value).endswith("or one of " + ", ".join(declared))


def test_models_are_bases_and_the_projects_own_fine_tunes(db, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    with db.session() as s:
        mine, other = projects.get_or_create(s, "mine"), projects.get_or_create(s, "other")
        job = jobs.submit(s, project_id=mine.id, kind="fine_tune", spec={})
        models.add_fine_tune(s, model_id="ft:smollm2-135m-instruct:mine::abc", project_id=mine.id, job_id=job.id,
                             base="smollm2-135m-instruct", path=str(adapter), pruning_rules=["Be brief."])
    with db.session() as s:
        listed = [m.id for m in models.list_(s, mine.id)]
        assert listed[-1] == "ft:smollm2-135m-instruct:mine::abc" and "smollm2-135m-instruct" in listed
        assert "ft:smollm2-135m-instruct:mine::abc" not in [m.id for m in models.list_(s, other.id)]
        with pytest.raises(NotFound):
            models.get(s, "ft:smollm2-135m-instruct:mine::abc", other.id)
        assert models.get(s, "ft:smollm2-135m-instruct:mine::abc", mine.id).pruning_rules == ("Be brief.",)
        assert models.delete(s, "ft:smollm2-135m-instruct:mine::abc", mine.id) == Path(adapter)
    with db.session() as s:
        assert models.find(s, "ft:smollm2-135m-instruct:mine::abc", mine.id) is None
    assert models.is_hosted("smollm2-135m-instruct") and models.is_hosted("ft:anything:at:all")
    assert not models.is_hosted("gpt-4o")
