"""The HTML report: ``results/report/index.html`` opens on what a reader takes in at a glance, the summary of the
paper's claims (``repro.claims.summarize``, from ``claims.csv``) and their forest plot, then the claims row by row,
the paper's numbers beside the miniature's per table, Tables 1-3 with their DSKD - KD plots, Figures 1-3, the
training curves as thumbnails grouped by pair (runs flagged by the training check marked) and the rendered
notebooks grouped by pair (each run's row, seed and Avg). Nothing is wider than the page: wide tables scroll in
their own box. Links are relative, so the results folder can be moved or served as it is. No torch import (the
workflow's report job builds it in the Snakemake process).

``python -m repro.report CONFIG`` builds it by hand from whatever results exist (missing files are listed, not
linked).
"""
from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt

from . import claims, grid, layout, names, tables
from .analysis import figure1_outputs, figure2_outputs, figure3_outputs
from .io import read_csv, read_json, write_text
from .validation import load_config
from .verdicts import VERDICT_COLORS, verdict_class

STYLE = """
* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 0 auto; padding: 0 1em 2em; color: #222;
       line-height: 1.4; }
h1 { font-size: 1.35em; margin: 0.5em 0 0.1em; }
p.meta { font-size: 0.85em; color: #444; margin: 0.2em 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.1em; margin: 1.6em 0 0.5em; scroll-margin-top: 3em; }
h2#summary { margin-top: 0.6em; font-size: 1.3em; }
h3, h4 { scroll-margin-top: 3em; }
p, li, summary, figcaption { overflow-wrap: anywhere; }
nav.top { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid #ddd; padding: 0.35em 0;
          display: flex; flex-wrap: wrap; gap: 0.2em 1em; font-size: 0.95em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
.box { overflow-x: auto; max-width: 100%; margin: 0.5em 0 1em; }
.box table { margin: 0; }
.box td { white-space: nowrap; overflow-wrap: normal; }
.box td:nth-child(2), .box th:nth-child(2) { text-align: left; }
.rows table { font-size: 0.8em; }
.rows td, .rows th { padding: 0.2em 0.35em; }
.rows td:first-child { white-space: normal; min-width: 8em; }
.rows td:nth-child(2), .rows th:nth-child(2) { position: sticky; left: 0; background: #fff; z-index: 1;
                                               box-shadow: 1px 0 0 #999; }
.rows th:nth-child(2) { background: #f2f2f2; }
table.claims { width: 100%; }
table.claims td { text-align: left; white-space: normal; }
table.claims td.num { text-align: right; white-space: nowrap; }
table.claims .sticky { position: sticky; right: 0; background: #fff; box-shadow: -1px 0 0 #999; }
table.claims th.sticky { background: #f2f2f2; }
table.compact td { white-space: nowrap; }
table.compact td:first-child { white-space: normal; }
tr.group th { text-align: left; background: #e8edf3; font-weight: 600; }
tr.group th.sticky { background: #e8edf3; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
.verdict { display: inline-block; padding: 0 0.4em; border-radius: 3px; font-weight: 600; white-space: nowrap;
           border: 2px solid; color: #222; }
.counts { font-size: 1.05em; display: flex; flex-wrap: wrap; gap: 0.4em; align-items: center; margin: 0.3em 0; }
ul.summary { padding-left: 1.2em; margin: 0.3em 0 0.6em; font-size: 0.9em; line-height: 1.35; }
ul.summary li { margin: 0.15em 0; }
ul.summary .verdict { font-size: 0.85em; padding: 0 0.3em; border-width: 1.5px; }
.notice { border-left: 4px solid #d98c00; background: #fff6e5; padding: 0.6em 1em; }
.missing { color: #a00; }
.caption { color: #444; font-size: 0.92em; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 0.6em; }
figure.thumb { margin: 0; border: 1px solid #ddd; padding: 0.3em; }
figure.thumb img { border: none; display: block; }
figure.thumb figcaption { font-size: 0.85em; }
figure.flagged { border: 3px double #D55E00; }
.flag { color: #8a3300; font-weight: 600; }
details { margin: 0.3em 0; border: 1px solid #e3e3e3; padding: 0.2em 0.6em; }
details > summary { cursor: pointer; font-weight: 600; }
"""
# How a verdict reads without colour too: a sign, the word, a border style (the colour is repro.verdicts')
VERDICT_SIGNS = {"holds": "✔", "does not hold": "✘", "undecided": "?", "not measured": "–"}
VERDICT_BORDERS = {"holds": "solid", "does not hold": "double", "undecided": "dashed", "not measured": "dotted"}
VERDICT_PLURALS = {"holds": "hold", "does not hold": "do not hold", "undecided": "undecided",
                   "not measured": "not measured"}


def _href(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target, base)).as_posix()


@lru_cache(maxsize=1)
def _markdown():
    md = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("table")  # raw HTML is escaped

    def heading_open(renderer, tokens, idx, options, env):  # the files' headings sit below the report's own (h1, h2)
        token = tokens[idx]
        token.tag = f"h{min(int(token.tag[1]) + 2, 6)}"
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("heading_open", heading_open)
    md.add_render_rule("heading_close", heading_open)
    return md


def markdown_to_html(text: str, box: str | None = None) -> str:
    """The Markdown the harness writes (headings, pipe tables, paragraphs with **bold** and `code`) as HTML, with
    markdown-it; raw HTML in it is escaped, headings move two levels down (below the report's own). ``box``: the
    CSS classes of a ``div`` each table is put in, which scrolls sideways when the table is wider than the page."""
    html = _markdown().render(text)
    if box is not None:
        html = html.replace("<table>", f'<div class="{box}"><table>').replace("</table>", "</table></div>")
    return html


class _Page:
    """The report's sections (each a title and blocks for the template) and the files it links (and the ones it
    could not find)."""

    def __init__(self, base: Path):
        self.base, self.sections, self.missing = base, [], []

    def section(self, title: str, id: str | None = None, nav: str | None = None) -> None:
        self.sections.append({"title": title, "id": id, "nav": nav, "blocks": []})

    def add(self, kind: str, **block) -> None:
        self.sections[-1]["blocks"].append({"kind": kind, **block})

    def href(self, path: Path) -> str | None:
        """The relative link to ``path``, or None (and ``path`` listed as missing) when it does not exist."""
        if not path.exists():
            self.missing.append(path)
            return None
        return _href(path, self.base)

    def link(self, path: Path, label: str | None = None) -> dict:
        return {"label": label or path.name, "href": self.href(path)}

    def links(self, text: str, *links: dict) -> None:
        self.add("links", text=text, links=list(links))

    def image(self, path: Path, alt: str, target: str | None = None, caption: str = "") -> None:
        """An image (linked to itself, or to ``target``: an anchor of the page)."""
        href = self.href(path)
        self.add("image", href=href, target=target or href, alt=alt, name=path.name, caption=caption)

    def markdown(self, text: str, box: str = "box") -> None:
        self.add("html", html=markdown_to_html(text, box))

    def markdown_file(self, path: Path, box: str = "box") -> None:
        if path.exists():
            self.markdown(path.read_text(encoding="utf-8"), box)
        else:
            self.missing.append(path)
            self.add("missing", text=f"{path.name} is missing")


def _run_notebooks(config: dict, run: grid.Cell) -> list[tuple[str, Path]]:
    """(kind, rendered HTML notebook) of one training run: training (and evaluation, where it is its own job)."""
    folder = grid.run_dir(config, run)
    if grid.separate_evaluation(config):
        return [("training", layout.notebook_file(folder, "train", ".html")),
                ("evaluation", layout.notebook_file(folder, "evaluate", ".html"))]
    return [("training and evaluation", layout.notebook_file(folder, "train", ".html"))]


def _step_notebooks(config: dict) -> list[tuple[str, Path]]:
    """(label, rendered HTML notebook) of the workflow's steps other than the training runs."""
    folder = grid.results_dir(config) / "notebooks"
    out = [("data preparation", folder / "prepare_data.html"), ("Tables 1-3", folder / "make_tables.html"),
           ("the claims' plots", folder / "plot_claims.html")]
    out += [(f"Figure {n}", folder / f"figure{n}.html") for n in grid.figure_numbers(config)]
    return out + [("training curves", folder / "training_curves.html")]


def notebooks(config: dict) -> list[tuple[str, Path]]:
    """(label, rendered HTML notebook) of every job of the workflow."""
    out = [(f"{run.run_id}: {kind}", path) for run in grid.runs(config) for kind, path in _run_notebooks(config, run)]
    return _step_notebooks(config) + out


def verdict_label(text: str) -> dict:
    """A verdict for the template: its class (``repro.verdicts.VERDICTS``), sign, words and CSS style."""
    kind = verdict_class(text)
    return {"text": text, "sign": VERDICT_SIGNS[kind], "kind": kind, "plural": VERDICT_PLURALS[kind],
            "style": f"border-color: {VERDICT_COLORS[kind]}; border-style: {VERDICT_BORDERS[kind]}; "
                     f"background: {VERDICT_COLORS[kind]}1f"}


def _claims(page: _Page, config: dict) -> None:
    """The summary, the forest plot and the claims table, from ``claims.csv``."""
    files = claims.claims_files(config)
    page.section("What holds in this run", "summary", "Summary")
    if not files["csv"].exists():
        page.missing.append(files["csv"])
        page.add("missing", text="The claims table has not been made (the workflow's make_claims step).")
        return
    rows = claims.read_claims(files["csv"])
    summary = claims.summarize(rows)
    page.add("summary", total=len(rows), counts=[(verdict_label(v), n) for v, n in summary["counts"].items()
                                                   if n or v != "not measured"],
             groups=[{"sentence": g["sentence"], "counts": [(verdict_label(v), n) for v, n in g["counts"].items() if n]}
                     for g in summary["groups"]])
    forest = grid.claims_figure_files(config)
    page.image(forest[0], "Forest plot of the claims", target="#claims-table",
               caption="Every claim as its difference with its 95% interval (Figure 1: the range over the "
                       "simulation's repetitions) against 0, the premise against its 5-point bar (dashed); the "
                       "paper's number where it gives one. Each interval is a row of the table below (click the "
                       "plot).")
    page.links("The plot: ", page.link(forest[0], "PNG"), page.link(forest[1], "PDF"))
    page.section("The paper's claims, row by row", "claims-table", "Claims")
    page.links("", page.link(files["md"], "Markdown"), page.link(files["csv"], "CSV"))
    page.add("claims", groups=[{"title": group, "rows": [
        {"comparison": r["comparison"], "paper": r["paper"], "measured": claims.measured(r), "runs": r["runs"],
         "verdict": verdict_label(r["verdict"])} for r in members]} for group, members in claims.groups(rows).items()])
    page.add("notice", text=claims.note(), css="caption")


def reference_cell(config: dict, cell: grid.Cell) -> grid.Cell | None:
    """The row a row is set against in the paper-beside-miniature tables, so that orderings are compared and not
    levels: a teacher and every KD row against the student's SFT, a DSKD row (every Table 3 row) against the KD row
    of its divergence, a different-vocabulary baseline or DSKD-CMA against the pair's SeqKD (the one baseline the
    paper reports for Qwen1.5 -> GPT-2 besides them), the rest against the student's SFT; the SFT row has none."""
    sft = grid.sft_cell(config, cell.pair)
    kd = grid.Cell(cell.pair, "kd", divergence=cell.divergence)
    seqkd = grid.Cell(cell.pair, "seqkd")
    if cell.role != "teacher" and cell.method == "sft":
        return None
    if cell.role != "teacher" and cell.method in ("dskd", "dskd_student_space") and grid.has_cell(config, kd):
        return kd
    if cell.role != "teacher" and cell.method in ("mined", "uld", "dskd_cma") and grid.has_cell(config, seqkd):
        return seqkd
    return sft


def _number(value: str) -> float | None:
    return None if value in ("", None) else float(value)


def _avg(row: dict | None) -> str:
    if row is None or row["status"] == "missing":
        return "missing"
    partial = f" ({row['runs']} of {row['runs_planned']} runs)" if row["status"] == "partial" else ""
    std = f" ± {float(row['avg_std']):.2f}" if row.get("avg_std") else ""
    return f"{float(row['avg']):.2f}{std}{partial}"


def _difference(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{a - b:+.2f}"


def paper_beside(config: dict, table: int, rows: dict[str, dict]) -> list[dict]:
    """Table ``table`` compactly, per pair: each row's reference row (``reference_cell``), the paper's Avg where
    PAPER.md gives one (``repro.tables.PAPER_AVG``) and its difference from the reference's, the miniature's mean ±
    std over training runs and its difference from the reference's mean. ``rows``: every table's CSV rows by cell
    id. Returns ``[{"title", "rows": [[cells]]}]``, one group per pair."""
    out: dict[str, dict] = {}
    for cell in grid.table_cells(config, table):
        row, ref = rows.get(cell.id), reference_cell(config, cell)
        ref_row = rows.get(ref.id) if ref is not None else None
        spec = config["pairs"][cell.pair]
        group = out.setdefault(cell.pair, {"title": f"{cell.pair}: {spec['teacher']} -> {spec['student']}",
                                           "rows": []})
        paper, paper_ref = (tables.PAPER_AVG.get((c.pair, c.method, c.divergence)) if c is not None and
                            c.role != "teacher" else None for c in (cell, ref))
        mine, mine_ref = (_number(r["avg"]) if r is not None and r["status"] != "missing" else None
                          for r in (row, ref_row))
        in_table = ref is not None and ref in grid.table_cells(config, table)
        group["rows"].append([grid.row_title(cell, table),
                              "" if ref is None else grid.row_title(ref, table) if in_table else ref.title,
                              f"{paper:.2f}" if paper is not None else "", _difference(paper, paper_ref),
                              _avg(row), _difference(mine, mine_ref)])
    return list(out.values())


def _training_curves(page: _Page, config: dict) -> None:
    """Thumbnails of every row's training curves, grouped by pair, the rows flagged by the training check marked."""
    flagged: dict[str, dict[int, list[str]]] = {}  # row id -> {seed: the training check's warnings}
    for run, summary in tables.train_summaries(config, grid.cells(config)):
        if summary.get("warnings"):
            flagged.setdefault(run.id, {})[run.seed] = summary["warnings"]
    pairs: dict[str, list[dict]] = {}
    for cell in grid.cells(config):
        path = grid.training_curve_file(config, cell)
        runs = len(grid.cell_runs(config, cell))
        pairs.setdefault(cell.pair, []).append({
            "href": page.href(path), "name": path.name, "title": cell.title,
            "caption": f"{runs} training run{'s' if runs > 1 else ''}",
            "flags": ", ".join(f"seed {seed}" for seed in flagged.get(cell.id, {})),
            "warnings": "; ".join(f"seed {seed}: {w}" for seed, ws in flagged.get(cell.id, {}).items() for w in ws)})
    n_flagged = sum(bool(f) for f in flagged.values())
    page.add("notice", css="caption", text=(
        f"Loss terms, diagnostics and dev Rouge-L of every table row (a line style per training seed); click a "
        f"thumbnail for the full figure. {n_flagged} of {len(grid.cells(config))} rows have a run flagged by the "
        f"training check (a training loss that rose, or a dev Rouge-L of 0 after every epoch)"
        f"{': marked ⚠ with a double border, the warnings listed under each table' if n_flagged else ''}."))
    page.add("thumbs", groups=[{"title": _pair_title(config, pair), "id": f"curves-{pair}", "entries": items,
                                "flagged": sum(bool(i["flags"]) for i in items)} for pair, items in pairs.items()])


def _pair_title(config: dict, pair: str) -> str:
    spec = config["pairs"][pair]
    return f"{pair}: {spec['teacher']} -> {spec['student']} (Table {spec['table']})"


def _notebooks(page: _Page, config: dict) -> None:
    """The rendered notebooks: the workflow's steps, then every training run grouped by pair (collapsed), each
    with its row, seed and Avg."""
    page.add("list", css="steps", entries=[("", page.link(path, label)) for label, path in _step_notebooks(config)])
    flagged = {run.run_id for run, summary in tables.train_summaries(config, grid.cells(config))
               if summary.get("warnings")}
    groups: dict[str, dict] = {}
    for run in grid.runs(config):
        scores = grid.scores_file(config, run)
        avg = f"{read_json(scores)['avg']['mean']:.2f}" if scores.exists() else "not finished"
        group = groups.setdefault(run.pair, {"title": _pair_title(config, run.pair), "rows": []})
        group["rows"].append({"row": run.row.title, "seed": run.seed, "avg": avg, "flagged": run.run_id in flagged,
                              "links": [page.link(path, kind) for kind, path in _run_notebooks(config, run)]})
    page.add("runs", groups=list(groups.values()))


def build_report(config: dict) -> tuple[str, list[Path]]:
    """The report's HTML (``repro/templates/report.html.j2``) and the list of files it should link but could not
    find."""
    target = grid.report_file(config)
    page = _Page(target.parent)
    results = grid.results_dir(config)

    _claims(page, config)

    table_rows: dict[str, dict] = {}
    for n in grid.tables(config):
        if (path := grid.table_file(config, n, "csv")).exists():
            for row in read_csv(path):
                table_rows.setdefault(row["cell"], row)
    page.section("The paper beside the miniature", "paper", "Paper vs miniature")
    page.add("notice", css="caption", text=(
        "Per row: the paper's Avg Rouge-L where PAPER.md gives one and the miniature's (mean ± std over training "
        "runs), each with its difference from the row's reference row (a DSKD or Table 3 row: the KD row of its "
        "divergence; a KD row or a teacher: the student's SFT; a different-vocabulary baseline or DSKD-CMA: the "
        "pair's SeqKD). The miniature's levels are far from the paper's (small models on a small synthetic task, see "
        "the README): compare the signs and orderings of the differences, not the levels."))
    for n in grid.tables(config):
        page.add("compact", title=f"Table {n}", header=["Row", "Reference", "Paper: Avg", "Paper: Δ",
                                                         "Miniature: Avg", "Miniature: Δ"],
                 groups=paper_beside(config, n, table_rows))

    page.section("Tables", "tables", "Tables")
    for n in grid.tables(config):
        page.add("heading", text=f"Table {n}", id=f"table{n}")
        if n in grid.difference_tables(config):
            page.image(grid.difference_figure_files(config, n)[0], f"Table {n}: KD w/ DSKD minus KD",
                       caption="KD w/ DSKD minus KD per divergence, one panel per pair, with 95% intervals; the "
                               "paper's difference (diamond) where PAPER.md gives both rows, its range over "
                               "divergences shaded.")
        page.links("", page.link(grid.table_file(config, n, "md"), "Markdown"),
                   page.link(grid.table_file(config, n, "tex"), "LaTeX"),
                   page.link(grid.table_file(config, n, "csv"), "CSV"),
                   *([page.link(grid.difference_figure_files(config, n)[1], "plot (PDF)")]
                     if n in grid.difference_tables(config) else []))
        page.markdown_file(grid.table_file(config, n, "md"), box="box rows")

    figures = {n: grid.figure_files(config, n) for n in grid.FIGURE_STEMS}
    page.section("Figure 1: toy simulation", "figure1", "Figure 1")
    toy = figure1_outputs(config)
    page.links("", page.link(figures[1][0], "PNG"), page.link(figures[1][1], "PDF"),
               page.link(toy["results"], "results JSON"), page.link(toy["table_csv"], "distances CSV"))
    page.image(figures[1][0], "Figure 1")
    page.markdown_file(toy["table_md"])

    page.section("Figure 2: LLM-judge win rates of DSKD against KD", "figure2", "Figure 2")
    if 2 in grid.figure_numbers(config):
        _figure2(page, figures[2], figure2_outputs(config))
    else:
        page.add("notice", text="This configuration has no pair with both KD and DSKD students of the same "
                                "divergence, so there is nothing to judge.")

    page.section("Figure 3: representation distance to the teacher", "figure3", "Figure 3")
    if 3 in grid.figure_numbers(config):
        outputs = figure3_outputs(config)
        page.links("", page.link(figures[3][0], "PNG"), page.link(figures[3][1], "PDF"),
                   page.link(outputs["results"], "values JSON"))
        page.image(figures[3][0], "Figure 3")
        page.markdown_file(outputs["table_md"])
    else:
        divergence = grid.figure_settings(config, "representation")["divergence"]
        page.add("notice", text="This configuration has no same-vocabulary pair with SFT, KD and DSKD students of "
                                f"the divergence {divergence}.")

    page.section("Training curves", "training", "Training curves")
    _training_curves(page, config)
    page.section("Rendered notebooks", "notebooks", "Notebooks")
    _notebooks(page, config)
    if page.missing:
        page.section("Missing files", "missing", "Missing files")
        page.add("list", css="", entries=[(str(p), None) for p in page.missing])
    text = _template().render(
        style=STYLE, sections=page.sections, results=str(results), n_cells=len(grid.cells(config)),
        n_runs=len(grid.runs(config)), training_seeds=", ".join(map(str, grid.training_seeds(config))),
        divergences=", ".join(names.DIVERGENCE_TITLES.get(d, d) for d in config["divergences"]),
        evaluation_seeds=", ".join(map(str, config["evaluation"]["seeds"])),
        when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return text, page.missing


@lru_cache(maxsize=1)
def _template():
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.get_template("report.html.j2")


def _figure2(page: _Page, files: list[Path], outputs: dict) -> None:
    from .figures import judge_table

    if not outputs["results"].exists():
        page.missing.append(outputs["results"])
        page.add("missing", text="The judge step has not run.")
        return
    result = read_json(outputs["results"])
    status = result["status"]
    if not status["configured"]:
        page.add("notice", text=status["reason"])
        return
    settings = result["settings"]
    page.links(f"Judge {settings['model']} at {settings['base_url'] or 'the OpenAI API'}, temperature "
               f"{settings['temperature']}, {settings['n_prompts']} {settings['test_set']} prompts"
               f"{' (each in both orders)' if settings.get('both_orders') else ''}, "
               f"seed-{settings['generation_seed']} generations: ", page.link(files[0], "PNG"),
               page.link(files[1], "PDF"), page.link(outputs["verdicts"], "verdicts with prompts (JSONL)"))
    page.image(files[0], "Figure 2")
    page.markdown(judge_table(result["summary"]))


def write_report(config: dict) -> tuple[Path, list[Path]]:
    """Write ``results/report/index.html`` atomically; returns its path and the files it could not link."""
    text, missing = build_report(config)
    target = grid.report_file(config)
    write_text(target, text)
    return target, missing


def main(argv: list[str] | None = None) -> None:
    """``python -m repro.report CONFIG``: build the report from the results that exist."""
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=main.__doc__)
    parser.add_argument("config", help="the workflow configuration (YAML)")
    args = parser.parse_args(argv)
    path, missing = write_report(load_config(args.config))
    print(path)
    for absent in missing:
        print(f"missing: {absent}")


if __name__ == "__main__":
    main()
