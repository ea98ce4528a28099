"""The HTML report: ``results/report/index.html`` links every table, figure and rendered notebook of a run and
shows the tables inline, so a reader opens one page in a browser. Links are relative, so the results folder can be
moved or served as it is. No torch import (the workflow's report job builds it in the Snakemake process).

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

from . import grid, layout
from .analysis import figure1_outputs, figure2_outputs, figure3_outputs
from .claims import claims_files
from .config import load_config
from .io import read_json, write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f2f2f2; }
td { white-space: nowrap; }
td:first-child, td:nth-child(2), th:first-child, th:nth-child(2) { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
.notice { border-left: 4px solid #d98c00; background: #fff6e5; padding: 0.6em 1em; }
.missing { color: #a00; }
nav a { margin-right: 1em; }
ul.files { columns: 3; }
"""


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


def markdown_to_html(text: str) -> str:
    """The Markdown the harness writes (headings, pipe tables, paragraphs with **bold** and `code`) as HTML, with
    markdown-it; raw HTML in it is escaped, headings move two levels down (below the report's own)."""
    return _markdown().render(text)


class _Page:
    """The report's sections (each a title and blocks for the template) and the files it links (and the ones it
    could not find)."""

    def __init__(self, base: Path):
        self.base, self.sections, self.missing = base, [], []

    def section(self, title: str, id: str | None = None, nav: str | None = None) -> None:
        self.sections.append({"title": title, "id": id, "nav": nav, "blocks": []})

    def add(self, kind: str, **block) -> None:
        self.sections[-1]["blocks"].append({"kind": kind, **block})

    def link(self, path: Path, label: str | None = None) -> dict:
        if not path.exists():
            self.missing.append(path)
        return {"label": label or path.name, "href": _href(path, self.base) if path.exists() else None}

    def links(self, text: str, *links: dict) -> None:
        self.add("links", text=text, links=list(links))

    def image(self, path: Path, alt: str) -> None:
        if not path.exists():
            self.missing.append(path)
        self.add("image", href=_href(path, self.base) if path.exists() else None, alt=alt, name=path.name)

    def markdown(self, text: str) -> None:
        self.add("html", html=markdown_to_html(text))

    def markdown_file(self, path: Path) -> None:
        if path.exists():
            self.markdown(path.read_text(encoding="utf-8"))
        else:
            self.missing.append(path)
            self.add("missing", text=f"{path.name} is missing")


def notebooks(config: dict) -> list[tuple[str, Path]]:
    """(label, rendered HTML notebook) of every job of the workflow."""
    results = grid.results_dir(config)
    out = [("data preparation", results / "notebooks" / "prepare_data.html")]
    for run in grid.runs(config):
        out.append((f"{run.run_id}: training" + ("" if grid.separate_evaluation(config) else " and evaluation"),
                    layout.notebook_file(grid.run_dir(config, run), "train", ".html")))
        if grid.separate_evaluation(config):
            out.append((f"{run.run_id}: evaluation", layout.notebook_file(grid.run_dir(config, run), "evaluate",
                                                                          ".html")))
    out.append(("Tables 1-3", results / "notebooks" / "make_tables.html"))
    out += [(f"Figure {n}", results / "notebooks" / f"figure{n}.html") for n in grid.figure_numbers(config)]
    out.append(("training curves", results / "notebooks" / "training_curves.html"))
    return out


def build_report(config: dict) -> tuple[str, list[Path]]:
    """The report's HTML (``repro/templates/report.html.j2``) and the list of files it should link but could not
    find."""
    target = grid.report_file(config)
    page = _Page(target.parent)
    results = grid.results_dir(config)

    page.section("The paper's claims", "claims", "Claims")
    files = claims_files(config)
    page.links("", page.link(files["md"], "Markdown"), page.link(files["csv"], "CSV"))
    page.markdown_file(files["md"])
    page.section("Tables", "tables", "Tables")
    for n in grid.tables(config):
        d = results / "tables"
        page.links(f"Table {n}: ", page.link(d / f"table{n}.md", "Markdown"), page.link(d / f"table{n}.tex", "LaTeX"),
                   page.link(d / f"table{n}.csv", "CSV"))
        page.markdown_file(d / f"table{n}.md")

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
    page.add("list", css="files", entries=[(f"{cell.id}: ", page.link(grid.training_curve_file(config, cell), "PNG"))
                                         for cell in grid.cells(config)])
    page.section("Rendered notebooks", "notebooks", "Notebooks")
    page.add("list", css="files", entries=[("", page.link(path, label)) for label, path in notebooks(config)])
    if page.missing:
        page.section("Missing files")
        page.add("list", css="", entries=[(str(p), None) for p in page.missing])
    text = _template().render(
        style=STYLE, sections=page.sections, results=str(results), n_cells=len(grid.cells(config)),
        n_runs=len(grid.runs(config)), training_seeds=", ".join(map(str, grid.training_seeds(config))),
        divergences=", ".join(config["divergences"]),
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
