"""The platform end to end, through the official `openai` SDK against `tuneforge serve` in a subprocess."""

from __future__ import annotations

import io

import openai
import pytest
from helpers import toy_rows
from live_server import Server, start_worker, wait_for_job


def training_file(n: int = 16) -> bytes:
    import json

    return "".join(json.dumps(r) + "\n" for r in toy_rows(n)).encode()


def run_fine_tune_flow(server: Server) -> None:
    key = server.key("acme")
    client = server.client(key)

    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(training_file())), purpose="fine-tune")
    assert uploaded.object == "file" and uploaded.purpose == "fine-tune" and uploaded.bytes > 0
    assert client.files.content(uploaded.id).content == training_file()
    valid = client.files.create(file=("valid.jsonl", io.BytesIO(training_file(4))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=uploaded.id, validation_file=valid.id, suffix="toy", seed=3,
        hyperparameters={"n_epochs": 1, "batch_size": 4, "checkpoint_every": 2}, metadata={"team": "search"},
    )
    assert job.metadata == {"team": "search"} and job.hyperparameters.n_epochs == 1
    assert job.status in ("validating_files", "queued", "running")
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:smollm2-135m-instruct:acme:toy:{job.id.removeprefix('ftjob-')[:12]}"
    assert job.trained_tokens and job.trained_tokens > 0

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    messages = [e.message for e in events]
    assert any(m.startswith("Step 4/4") for m in messages), messages
    assert messages[0] == "The job has successfully completed"  # newest first
    assert any(e.type == "metrics" and "train_loss" in e.data and "tokens_per_s" in e.data for e in events)
    assert any("validation loss=" in m for m in messages)
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    rest = client.fine_tuning.jobs.list_events(job.id, limit=100, after=page.data[-1].id).data
    assert [e.id for e in page.data + rest] == [e.id for e in events]
    assert [j.id for j in client.fine_tuning.jobs.list(limit=10).data] == [job.id]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [4, 2]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-4"

    messages_in = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "a=1 b=2"}]
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=messages_in, temperature=0,
                                           max_tokens=20)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    chunks = list(client.chat.completions.create(
        model=job.fine_tuned_model, messages=messages_in, temperature=0, max_tokens=20, stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content  # greedy: streaming changes nothing
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    ckpt = client.chat.completions.create(model=checkpoints[1].fine_tuned_model_checkpoint, messages=messages_in,
                                          max_tokens=5)
    assert ckpt.choices[0].finish_reason in ("stop", "length")

    # a second project sees none of it
    other = server.client(server.key("globex"))
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=job.fine_tuned_model, messages=messages_in, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(uploaded.id)
    assert job.fine_tuned_model not in [m.id for m in other.models.list().data]
    assert "smollm2-135m-instruct" in [m.id for m in other.models.list().data]

    # a wrong key is refused
    with pytest.raises(openai.AuthenticationError) as refused:
        server.client("tf-not-a-key").models.list()
    assert refused.value.body["code"] == "invalid_api_key"

    assert job.fine_tuned_model in [m.id for m in client.models.list().data]
    assert client.models.delete(job.fine_tuned_model).deleted
    assert job.fine_tuned_model not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=messages_in, max_tokens=2)


@pytest.mark.slow
def test_fine_tune_and_serve_through_the_openai_sdk(data_dir, smollm2):
    with Server(data_dir) as server:
        run_fine_tune_flow(server)


@pytest.mark.slow
def test_same_flow_on_postgres_with_two_workers_running_each_job_once(data_dir, smollm2, postgres_url):
    with Server(data_dir, database_url=postgres_url, workers=2) as server:
        run_fine_tune_flow(server)
        client = server.client(server.key("acme"))
        file_id = client.files.create(file=("t.jsonl", io.BytesIO(training_file(8))), purpose="fine-tune").id
        created = [client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id,
                                                  hyperparameters={"n_epochs": 1, "batch_size": 4})
                   for _ in range(3)]
        finished = [wait_for_job(client, j.id) for j in created]
        assert [j.status for j in finished] == ["succeeded"] * 3
        workers = set()
        for job in finished:
            started = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
                       if e.message.startswith("Job started on worker")]
            assert len(started) == 1, [e.message for e in started]  # claimed once, run once
            workers.add(started[0].data["worker"])
        assert len(workers) == 2  # both workers took jobs from the one queue


def _events(client, job_id: str) -> list:
    return list(reversed(client.fine_tuning.jobs.list_events(job_id, limit=100).data))  # oldest first


@pytest.mark.slow
def test_killed_worker_job_is_requeued_and_resumes_from_its_checkpoint(data_dir, smollm2):
    import signal
    import time

    with Server(data_dir, workers=0) as server:
        client = server.client(server.key("acme"))
        file_id = client.files.create(file=("t.jsonl", io.BytesIO(training_file(40))), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id, hyperparameters={
            "n_epochs": 1, "batch_size": 4, "checkpoint_every": 3})
        first = start_worker(server)
        deadline = time.time() + 300
        while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = max(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data)
        second = start_worker(server)
        try:
            done = wait_for_job(client, job.id)
        finally:
            second.terminate()
            second.wait()
        assert done.status == "succeeded", done.error
        messages = [e.message for e in _events(client, job.id)]
        assert sum(m.startswith("Job started on worker") for m in messages) == 2
        requeued = next(i for i, m in enumerate(messages) if "stopped responding; job requeued" in m)
        resumed = [m for m in messages[requeued:] if m.startswith("Resuming from checkpoint at step")]
        assert resumed and int(resumed[0].split("step ")[1].split(":")[0]) >= killed_at
        steps_after = [m for m in messages[requeued:] if m.startswith("Step ")]
        assert steps_after and all(int(m.split()[1].split("/")[0]) > killed_at for m in steps_after)
        assert done.fine_tuned_model in [m.id for m in client.models.list().data]


@pytest.mark.slow
def test_cancel_stops_a_running_job_within_seconds(data_dir, smollm2):
    import time

    with Server(data_dir, workers=1, stale_after=4) as server:
        client = server.client(server.key("acme"))
        file_id = client.files.create(file=("t.jsonl", io.BytesIO(training_file(200))), purpose="fine-tune").id
        long = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id,
                                              hyperparameters={"n_epochs": 3, "batch_size": 4})
        wait_for_job(client, long.id, until=("running",))
        while not any(e.message.startswith("Step ") for e in _events(client, long.id)):
            time.sleep(0.5)
        cancelled = client.fine_tuning.jobs.cancel(long.id)
        assert cancelled.status == "cancelled"
        t0 = time.time()
        small = client.files.create(file=("s.jsonl", io.BytesIO(training_file(4))), purpose="fine-tune").id
        next_job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=small,
                                                  hyperparameters={"n_epochs": 1})
        wait_for_job(client, next_job.id, until=("running", "succeeded"))
        assert time.time() - t0 < 20  # the one worker let go of the cancelled job and took the next
        assert wait_for_job(client, next_job.id).status == "succeeded"
        final = client.fine_tuning.jobs.retrieve(long.id)
        assert final.status == "cancelled" and final.fine_tuned_model is None
        with pytest.raises(openai.ConflictError):
            client.fine_tuning.jobs.cancel(long.id)


def test_vllm_backend_without_vllm_or_gpu_is_one_clear_line(data_dir):
    from helpers import cli

    proc = cli("serve", "--backend", "vllm", "--port", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --backend vllm needs vLLM on a CUDA machine: pip install 'tuneforge[vllm]'"]
