"""The eval report as one self-contained HTML page: inline CSS, inline SVG, a few lines of inline JS, no URL to
fetch, so it opens offline, from a job's artifact folder or an email attachment alike.

What people look at: each grader's scores with error bars, the win-rate matrix as a heatmap, the ranking with
its intervals, the judge's position consistency, and the rows side by side with each verdict's explanation,
filterable to the rows where the models differ or where the judge's two orders disagreed. Every piece of
text that came from a model or a file is HTML-escaped.

The pieces are public so the web console can embed them in its run page: `sections` (everything above the
rows), `row` (one row side by side, with each verdict's explanation), `row_flags` and `FILTERS` (the
disagreement filters, which the console applies on the server to page through rows).
"""

from __future__ import annotations

from html import escape

ROW_LIMIT = 5000  # rows shown; the JSON has them all
# the row filters: name -> what it shows ("all", or a flag of `row_flags`)
FILTERS = {"all": "all rows", "differ": "rows where the models differ",
           "inconsistent": "rows where the judge's two orders disagreed"}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232a;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#667}
.row{border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:8px}
.outs{display:grid;gap:8px;grid-template-columns:repeat(auto-fit,minmax(260px,1fr))}
.out{background:#f6f8fa;border-radius:4px;padding:6px}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font:12.5px/1.4 ui-monospace,monospace}
.win{color:#116329;font-weight:600}.tie{color:#667}.bad{color:#a40e26}
svg text{font:12px system-ui,sans-serif}
"""

JS = """
function applyFilter(){var v=document.getElementById('filter').value;
document.querySelectorAll('.row').forEach(function(r){r.style.display=(v==='all'||r.dataset[v]==='1')?'':'none';});}
"""


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(report: dict) -> str:
    """The whole page for a report dict (`report.build_report`'s shape)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Eval report</title><style>{CSS}</style>"
             "</head><body><h1>Eval report</h1>", sections(report), _rows(report),
             f"<script>{JS}</script></body></html>"]
    return "".join(parts)


def sections(report: dict) -> str:
    """Everything above the rows: the summary, scores with error bars, win-rate matrices, the ranking, the
    forgetting check and the judge's consistency (each section with an h2 heading, charts as inline SVG)."""
    return "".join([summary(report), scores(report), matrices(report), ranking(report), forgetting(report),
                    judge(report)])


def summary(report: dict) -> str:
    sets = ", ".join(f"{escape(s['name'])} ({s['rows']} rows)" for s in report.get("test_sets", []))
    models = ", ".join(escape(m["name"]) for m in report.get("models", []))
    judge = [report["judge"].get("label") or "judge"] if report.get("judge") else []
    labels = list(report.get("graders", {})) + judge
    graders = ", ".join(escape(g) for g in labels)
    return (f"<p>Test sets: {sets}<br>Models: {models}<br>Graders: {graders or '–'}"
            f"<br><span class='muted'>All intervals are 95% bootstrap intervals.</span></p>")


def scores(report: dict) -> str:
    out = ["<h2>Scores</h2>"]
    for label in report.get("graders", {}):
        bars = [(m["name"], m["graders"].get(label, {})) for m in report["models"]]
        out.append(f"<h3>{escape(label)}</h3>" + _bar_chart(bars) + _score_table(bars))
        alignment = report["graders"][label].get("alignment")
        if alignment:
            out.append(_alignment(alignment))
    return "".join(out) if len(out) > 1 else ""


def _bar_chart(bars: list[tuple[str, dict]]) -> str:
    """Horizontal bars of the mean (0..1) with the CI as a whisker."""
    left, width, height = 180, 420, 26
    rows = []
    for n, (name, s) in enumerate(bars):
        y = 10 + n * height
        rows.append(f"<text x='{left - 8}' y='{y + 14}' text-anchor='end'>{escape(name)}</text>")
        if s.get("mean") is None:
            continue
        rows.append(f"<rect x='{left}' y='{y + 3}' width='{s['mean'] * width:.1f}' height='{height - 8}' "
                    "fill='#7aa7d9'/>")
        if s.get("ci_low") is not None:
            lo, hi, mid = left + s["ci_low"] * width, left + s["ci_high"] * width, y + height / 2
            rows.append(f"<line x1='{lo:.1f}' x2='{hi:.1f}' y1='{mid}' y2='{mid}' stroke='#1d232a'/>"
                        f"<line x1='{lo:.1f}' x2='{lo:.1f}' y1='{mid - 5}' y2='{mid + 5}' stroke='#1d232a'/>"
                        f"<line x1='{hi:.1f}' x2='{hi:.1f}' y1='{mid - 5}' y2='{mid + 5}' stroke='#1d232a'/>")
        rows.append(f"<text x='{left + width + 8}' y='{y + 14}'>{_f(s['mean'])}</text>")
    total = 20 + len(bars) * height
    axis = "".join(f"<text x='{left + t * width}' y='{total + 4}' text-anchor='middle' class='muted'>{t}</text>"
                   for t in (0, 0.5, 1))
    return (f"<svg width='{left + width + 60}' height='{total + 10}' role='img' aria-label='Mean score per model, "
            f"with its 95% CI as a whisker'>{''.join(rows)}{axis}</svg>")


def _score_table(bars: list[tuple[str, dict]]) -> str:
    body = "".join(f"<tr><td>{escape(name)}</td><td class='num'>{_f(s.get('mean'))}</td>"
                   f"<td class='num'>{_f(s.get('ci_low'))} – {_f(s.get('ci_high'))}</td>"
                   f"<td class='num'>{s.get('n', 0)}</td></tr>" for name, s in bars)
    return f"<table><tr><th>model</th><th>mean</th><th>95% CI</th><th>n</th></tr>{body}</table>"


def _alignment(a: dict) -> str:
    cells = "".join(f"<td class='num'>{_f(a.get(k))}</td>" for k in ("accuracy", "precision", "recall", "kappa"))
    return ("<p>Judge agreement with the person's labels (alignment set, "
            f"{a.get('n')} rows, {a.get('invalid')} unreadable):</p><table><tr><th>accuracy</th><th>precision</th>"
            f"<th>recall</th><th>Cohen's kappa</th></tr><tr>{cells}</tr></table>")


LOSE, EVEN, WIN = (215, 48, 39), (255, 255, 255), (26, 152, 80)


def _heat(rate: float | None) -> str:
    """Red (0) through white (0.5) to green (1)."""
    if rate is None:
        return "#eeeeee"
    far, t = (LOSE, 1 - 2 * rate) if rate < 0.5 else (WIN, 2 * rate - 1)
    r, g, b = (round(e + (f - e) * t) for e, f in zip(EVEN, far))
    return f"rgb({r},{g},{b})"


def matrices(report: dict) -> str:
    names = [m["name"] for m in report.get("models", [])]
    by_grader: dict[str, dict[tuple[str, str], dict]] = {}
    for p in report.get("pairwise", []):
        by_grader.setdefault(p["grader"], {})[(p["a"], p["b"])] = p
    if not by_grader:
        return ""
    out = ["<h2>Win rates</h2><p class='muted'>Row model's win rate against the column model (a tie counts "
           "half), with its 95% CI.</p>"]
    for label, pairs in by_grader.items():
        out.append(f"<h3>{escape(label)}</h3>" + _matrix(names, pairs))
    return "".join(out)


def _matrix(names: list[str], pairs: dict[tuple[str, str], dict]) -> str:
    # column names slanted above the cells, so long names do not collide; as much room as the longest needs
    cell, left = 110, 170
    top = min(120, 24 + round(4.2 * max((len(n) for n in names), default=0)))
    shapes = []
    for i, row in enumerate(names):
        shapes.append(f"<text x='{left - 8}' y='{top + i * cell / 2 + 20}' text-anchor='end'>{escape(row)}</text>")
        for j, col in enumerate(names):
            x, y = left + j * cell, top + i * cell / 2
            rate, low, high = _oriented(pairs, row, col)
            label = "" if row == col else f"{_f(rate, 2)}"
            shapes.append(f"<rect x='{x}' y='{y}' width='{cell - 2}' height='{cell / 2 - 2}' fill='{_heat(rate)}'>"
                          f"<title>{escape(row)} vs {escape(col)}: {_f(rate)} ({_f(low)} – {_f(high)})</title></rect>"
                          f"<text x='{x + cell / 2}' y='{y + 18}' text-anchor='middle'>{label}</text>"
                          + (f"<text x='{x + cell / 2}' y='{y + 34}' text-anchor='middle' class='muted'>"
                             f"{_f(low, 2)}–{_f(high, 2)}</text>" if label and low is not None else ""))
    heads = "".join(f"<text x='{left + j * cell + cell / 2}' y='{top - 8}' text-anchor='start' "
                    f"transform='rotate(-35 {left + j * cell + cell / 2} {top - 8})'>{escape(c)}</text>"
                    for j, c in enumerate(names))
    return (f"<svg width='{left + len(names) * cell + 60}' height='{top + len(names) * cell / 2 + 10}' role='img' "
            "aria-label='Win rate of each row model against each column model, with its 95% CI'>"
            f"{heads}{''.join(shapes)}</svg>")


def _oriented(pairs: dict, row: str, col: str) -> tuple[float | None, float | None, float | None]:
    if (row, col) in pairs:
        p = pairs[(row, col)]
        return p["win_rate"], p["ci_low"], p["ci_high"]
    if (col, row) in pairs:
        p = pairs[(col, row)]
        return _flip(p["win_rate"]), _flip(p["ci_high"]), _flip(p["ci_low"])
    return None, None, None


def _flip(v: float | None) -> float | None:
    return None if v is None else 1 - v


def ranking(report: dict) -> str:
    by_grader: dict[str, list[dict]] = {}
    for r in report.get("ratings", []):
        by_grader.setdefault(r["grader"], []).append(r)
    if not by_grader:
        return ""
    out = ["<h2>Ranking</h2><p class='muted'>Bradley-Terry ratings (Elo-like scale, mean 1000) with 95% "
           "bootstrap intervals.</p>"]
    for label, ratings in by_grader.items():
        out.append(f"<h3>{escape(label)}</h3>" + interval_chart(ratings))
    return "".join(out)


def interval_chart(ratings: list[dict]) -> str:
    values = [v for r in ratings for v in (r["rating"], r["ci_low"], r["ci_high"]) if v is not None]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    left, width, height = 180, 420, 24

    def x(v: float) -> float:
        return left + (v - lo) / span * width

    shapes = []
    for n, r in enumerate(ratings):
        y = 12 + n * height
        shapes.append(f"<text x='{left - 8}' y='{y + 4}' text-anchor='end'>{escape(r['name'])}</text>")
        if r["ci_low"] is not None:
            shapes.append(f"<line x1='{x(r['ci_low']):.1f}' x2='{x(r['ci_high']):.1f}' y1='{y}' y2='{y}' "
                          "stroke='#1d232a'/>")
        shapes.append(f"<circle cx='{x(r['rating']):.1f}' cy='{y}' r='4' fill='#2f6fb3'/>"
                      f"<text x='{left + width + 12}' y='{y + 4}'>{r['rating']:.0f} "
                      f"({_f(r['ci_low'], 0)} – {_f(r['ci_high'], 0)})</text>")
    return (f"<svg width='{left + width + 160}' height='{len(ratings) * height + 16}' role='img' "
            f"aria-label='Ratings with their 95% intervals'>{''.join(shapes)}</svg>")


def forgetting(report: dict) -> str:
    f = report.get("forgetting")
    if not f:
        return ""
    lines = [("all", f["overall"])] + sorted(f.get("by_category", {}).items())
    body = "".join(f"<tr><td>{escape(str(name))}</td><td class='num'>{_f(d['mean_a'])}</td><td class='num'>"
                   f"{_f(d['mean_b'])}</td><td class='num'>{_f(d['delta'])}</td><td class='num'>{_f(d['ci_low'])} – "
                   f"{_f(d['ci_high'])}</td><td class='num'>{d['n']}</td></tr>" for name, d in lines)
    return (f"<h2>Forgetting check</h2><p>{escape(f['tuned'])} minus {escape(f['base'])} on the general-skills "
            "suite: an interval wholly below 0 means skills were lost.</p><table><tr><th>category</th><th>base</th>"
            f"<th>fine-tune</th><th>delta</th><th>95% CI</th><th>n</th></tr>{body}</table>")


def judge(report: dict) -> str:
    j = report.get("judge")
    if not j:
        return ""
    return (f"<h2>Judge</h2><p>{escape(str(j['model']))}, prompt {escape(str(j['prompt_version']))}. Position "
            f"consistency <b>{_f(j['position_consistency'], 2)}</b> (share of judged pairs whose two orders gave the "
            f"same verdict; a judge that always picks the first answer scores 0). {j['pairs_judged']} pairs judged "
            f"in both orders, {j['identical']} identical pairs tied without a call, {j['invalid_verdicts']} "
            "unreadable verdicts (counted as ties).</p>")


def _rows(report: dict) -> str:
    rows = report.get("rows", [])
    options = "".join(f"<option value='{k}'>{escape(label)}</option>" for k, label in FILTERS.items())
    head = ("<h2>Rows</h2><p><label for='filter'>Show</label> <select id='filter' onchange='applyFilter()'>"
            f"{options}</select>"
            + (f" <span class='muted'>(first {ROW_LIMIT} of {len(rows)})</span>" if len(rows) > ROW_LIMIT else "")
            + "</p>")
    return head + "".join(row(r) for r in rows[:ROW_LIMIT])


def _grade_scores(r: dict) -> dict[str, dict[str, float | None]]:
    return {g: {m: v["score"] for m, v in by.items()} for g, by in r.get("grades", {}).items()}


def row_flags(r: dict) -> dict[str, bool]:
    """Which filters a report row passes: `differ` (a grader scored the models differently, or the judge
    preferred one), `inconsistent` (the judge's two orders of a pair gave different verdicts)."""
    differ = any(len(set(s.values())) > 1 for s in _grade_scores(r).values()) or any(
        v["winner"] != "tie" for v in r.get("verdicts", []))
    inconsistent = any(v.get("consistent") is False for v in r.get("verdicts", []))
    return {"all": True, "differ": differ, "inconsistent": inconsistent}


def row(r: dict) -> str:
    """One row side by side: the question, the reference, each model's answer with its grades, and each verdict
    with the judge's explanation for both orders."""
    by_grader, flags = _grade_scores(r), row_flags(r)
    question = next((m.get("content") for m in reversed(r["prompt"].get("messages", []))
                     if m.get("role") == "user" and isinstance(m.get("content"), str)), "")
    outs = []
    for model, out in r.get("outputs", {}).items():
        grades = " ".join(f"{escape(g)}={_f(s.get(model), 2)}" for g, s in by_grader.items())
        outs.append(f"<div class='out'><b>{escape(model)}</b> <span class='muted'>{grades}</span>"
                    f"<pre>{_text_or_empty(_shown(out))}</pre></div>")
    if r.get("reference"):
        outs.insert(0, f"<div class='out'><b>reference</b><pre>{escape(_shown(r['reference']))}</pre></div>")
    return (f"<div class='row' data-differ='{int(flags['differ'])}' data-inconsistent='{int(flags['inconsistent'])}'>"
            f"<div class='muted'>#{r['index']} · {escape(str(r['test_set']))} row {r['row']}</div>"
            f"<pre>{escape(question or '')}</pre><div class='outs'>{''.join(outs)}</div>"
            f"{''.join(_verdict(v) for v in r.get('verdicts', []))}</div>")


def _verdict(v: dict) -> str:
    cls = "tie" if v["winner"] == "tie" else "win"
    head = (f"<b>{escape(v['a'])}</b> vs <b>{escape(v['b'])}</b>: <span class='{cls}'>"
            f"{escape(v['winner'] if v['winner'] == 'tie' else v['winner'] + ' wins')}</span>")
    if v.get("identical"):
        return f"<p>{head} <span class='muted'>(identical answers, not judged)</span></p>"
    if v.get("consistent") is False:
        head += " <span class='bad'>(the two orders disagreed)</span>"
    items = "".join(f"<li>{escape(j['shown_first'])} shown first: <b>{escape(str(j['winner']))}</b>"
                    f"{' (unreadable verdict)' if j['verdict'] == 'invalid' else ''}. "
                    f"{escape(j.get('explanation') or '')}</li>" for j in v.get("judgments", []))
    return f"<div>{head}<ul>{items}</ul></div>"


def _text_or_empty(text: str) -> str:
    """An answer, escaped; one with no visible text says so (else it would be a blank box)."""
    return escape(text) if text.strip() else "<span class='muted'>(empty answer)</span>"


def _shown(out: dict) -> str:
    parts = [out.get("text") or ""]
    for call in out.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append(f"[tool call] {fn.get('name')}({fn.get('arguments') or ''})")
    if out.get("error"):
        parts.append(f"[error] {out['error']}")
    return "\n".join(p for p in parts if p)
