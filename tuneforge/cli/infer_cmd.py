"""`tuneforge chat`, `tuneforge generate` and `tuneforge eval`: use a model (and adapter) on prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.app import DataDir, app, console, out, use
from tuneforge.cli.progress import ProgressBar

Opt = typer.Option
ModelOpt = Annotated[str, Opt(help="Model: registry name, model folder, adapter folder or hub id.")]
AdapterOpt = Annotated[str | None, Opt(help="Adapter folder to apply to --model.")]


def _generator(model: str, adapter: str | None, max_batch: int = 32):
    from tuneforge.inference.generate import Generator

    return Generator(model, adapter, on_event=lambda e: console.print(f"[dim]{e.message}[/dim]"), max_batch=max_batch)


@app.command()
def chat(
    model: ModelOpt, adapter: AdapterOpt = None,
    prompt: Annotated[str | None, Opt(help="One-shot: answer this and exit.")] = None,
    system: Annotated[str | None, Opt(help="System message.")] = None,
    max_tokens: Annotated[int, Opt(help="Most tokens per answer.")] = 512,
    temperature: Annotated[float, Opt(help="0 for greedy.")] = 0.0,
    data_dir: DataDir = None,
) -> None:
    """Chat with a model: one shot with --prompt, else interactively (empty line or Ctrl-D quits)."""
    use(data_dir)
    from tuneforge.inference.generate import Prompt, SamplingParams

    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature)
    messages = [{"role": "system", "content": system}] if system else []
    with _generator(model, adapter) as gen:
        while True:
            text = prompt if prompt is not None else _ask()
            if not text:
                return
            messages.append({"role": "user", "content": text})
            answer = ""
            for piece in gen.stream(Prompt(messages), params):
                answer += piece
                out.print(piece, end="", highlight=False, markup=False)
            out.print()
            messages.append({"role": "assistant", "content": answer})
            if prompt is not None:
                return


def _ask() -> str:
    try:
        return console.input("[bold]you>[/bold] ").strip()
    except EOFError:
        return ""


@app.command()
def generate(
    model: ModelOpt,
    data: Annotated[Path, Opt(help="Rows (OpenAI chat JSONL); a final assistant turn is dropped.")],
    out_file: Annotated[Path, Opt("--out", help="Output JSONL: each row plus an `output` field.")],
    adapter: AdapterOpt = None,
    max_tokens: Annotated[int, Opt(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, Opt(help="0 for greedy.")] = 0.0,
    batch_size: Annotated[int, Opt(min=1, help="Most prompts generating at once (a finished one makes room for "
                                          "the next).")] = 16,
    data_dir: DataDir = None,
) -> None:
    """Answer every row of a file, batched continuously; writes one line per input row, in order."""
    use(data_dir)
    from tuneforge.data.validate import raise_if_invalid, validate_file
    from tuneforge.inference.generate import Prompt, SamplingParams, drop_final_answer

    report = validate_file(data, prompts=True)
    raise_if_invalid(report)
    rows = [row for _line, row in report.rows]
    prompts = [Prompt(drop_final_answer(r["messages"]), r.get("tools")) for r in rows]
    with _generator(model, adapter, max_batch=batch_size) as gen, ProgressBar("generating") as bar:
        outputs = gen.complete(prompts, SamplingParams(max_new_tokens=max_tokens, temperature=temperature),
                               on_event=bar)
    tmp = out_file.with_name(out_file.name + ".tmp")
    with open(tmp, "w") as f:
        for row, text in zip(rows, outputs):
            f.write(json.dumps({**row, "output": text}, ensure_ascii=False) + "\n")
    tmp.rename(out_file)
    out.print(f"{len(rows)} answers written to {out_file}")


@app.command("eval")
def evaluate(
    model: ModelOpt,
    data: Annotated[Path, Opt(help="Test rows whose final assistant turn is the reference answer.")],
    adapter: AdapterOpt = None,
    limit: Annotated[int | None, Opt(min=1, help="Score only the first N rows.")] = None,
    out_file: Annotated[Path | None, Opt("--out", help="Also write predictions here (JSONL).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Exact-match (and, for JSON answers, field-level) accuracy of one model on a test split: a one-model
    `tuneforge evals run` with the exact and json graders."""
    use(data_dir)
    from tuneforge.cli.evals_cmd import run_local

    if not data.is_file():
        from tuneforge.errors import UserError

        raise UserError(f"--data {data}: no such file")
    name = adapter or model  # an adapter folder names its base in its manifest
    report, _folder = run_local([name], [{"type": "exact"}, {"type": "json"}], data, None, None, limit, None, None)
    graders = report["models"][0]["graders"]
    if out_file:
        with open(out_file, "w") as f:
            for row in report["rows"]:
                answer = row["outputs"][name]["text"]
                f.write(json.dumps({**row["prompt"], "output": answer}, ensure_ascii=False) + "\n")
    exact, fields = graders["exact"], graders["json"]
    shown = f", field accuracy {fields['mean']:.3f}" if fields["n"] else ""
    out.print(f"exact match {exact['mean']:.3f} on {exact['n']} rows{shown} (95% CI {exact['ci_low']:.3f}-"
              f"{exact['ci_high']:.3f})")
