"""The HTML report: ``results/report/index.html`` links every table, figure and rendered notebook of a run and
shows the tables inline, so a reader opens one page in a browser. Links are relative, so the results folder can be
moved or served as it is. No torch import (the workflow's report job builds it in the Snakemake process).

``python -m repro.report CONFIG`` builds it by hand from whatever results exist (missing files are listed, not
linked).
"""
from __future__ import annotations

import html
import os
from datetime import datetime, timezone
from pathlib import Path

from . import grid

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


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _href(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target, base)).as_posix()


def _inline(text: str) -> str:
    """Escaped text with Markdown's **bold** and `code` spans."""
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _esc(text))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def markdown_to_html(text: str) -> str:
    """The subset of Markdown the harness writes: ``#`` headings, pipe tables, paragraphs. Everything is escaped."""
    out, table = [], []

    def flush_table():
        if not table:
            return
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
        if len(cells) > 1 and all(c and set(c) <= set("-: ") for c in cells[1]):
            cells.pop(1)  # the header separator
        out.append("<table><thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in cells[0]) + "</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
                   + "</tbody></table>")
        table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)  # below the report's own headings
            out.append(f"<h{level}>{_esc(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line.strip())}</p>")
    flush_table()
    return "\n".join(out)


class _Page:
    """Collects the report's HTML and the files it links (and the ones it could not find)."""

    def __init__(self, base: Path):
        self.base, self.parts, self.missing = base, [], []

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def link(self, path: Path, label: str | None = None) -> str:
        label = label or path.name
        if not path.exists():
            self.missing.append(path)
            return f'<span class="missing">{_esc(label)} (missing)</span>'
        return f'<a href="{_esc(_href(path, self.base))}">{_esc(label)}</a>'

    def image(self, path: Path, alt: str) -> None:
        if path.exists():
            self.add(f'<p><a href="{_esc(_href(path, self.base))}"><img src="{_esc(_href(path, self.base))}" '
                     f'alt="{_esc(alt)}"></a></p>')
        else:
            self.missing.append(path)
            self.add(f'<p class="missing">{_esc(alt)}: {_esc(path.name)} is missing</p>')

    def markdown_file(self, path: Path) -> None:
        if path.exists():
            self.add(markdown_to_html(path.read_text(encoding="utf-8")))
        else:
            self.missing.append(path)
            self.add(f'<p class="missing">{_esc(path.name)} is missing</p>')


def notebooks(config: dict) -> list[tuple[str, Path]]:
    """(label, rendered HTML notebook) of every job of the workflow."""
    results = grid.results_dir(config)
    out = [("data preparation", results / "notebooks" / "prepare_data.html")]
    for run in grid.runs(config):
        out.append((f"{run.run_id}: training" + ("" if grid.separate_evaluation(config) else " and evaluation"),
                    grid.run_dir(config, run) / "train.html"))
        if grid.separate_evaluation(config):
            out.append((f"{run.run_id}: evaluation", grid.run_dir(config, run) / "evaluate.html"))
    out.append(("Tables 1-3", results / "notebooks" / "make_tables.html"))
    out += [(f"Figure {n}", results / "notebooks" / f"figure{n}.html") for n in grid.figure_numbers(config)]
    out.append(("training curves", results / "notebooks" / "training_curves.html"))
    return out


def build_report(config: dict) -> tuple[str, list[Path]]:
    """The report's HTML and the list of files it should link but could not find."""
    from .analysis import figure1_outputs, figure2_outputs, figure3_outputs

    target = grid.report_file(config)
    page = _Page(target.parent)
    results = grid.results_dir(config)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page.add(f"<h1>Dual-Space Knowledge Distillation: reproduction report</h1>"
             f"<p>Results folder <code>{_esc(results)}</code>, {len(grid.cells(config))} table cells in "
             f"{len(grid.runs(config))} training runs (training seeds "
             f"{_esc(', '.join(map(str, grid.training_seeds(config))))}), "
             f"divergences {_esc(', '.join(config['divergences']))}, evaluation seeds "
             f"{_esc(', '.join(map(str, config['evaluation']['seeds'])))}. Built {when}.</p>"
             '<nav><a href="#claims">Claims</a><a href="#tables">Tables</a><a href="#figure1">Figure 1</a>'
             '<a href="#figure2">Figure 2</a>'
             '<a href="#figure3">Figure 3</a><a href="#training">Training curves</a>'
             '<a href="#notebooks">Notebooks</a></nav>')

    from .claims import claims_files

    page.add('<h2 id="claims">The paper\'s claims</h2>')
    files = claims_files(config)
    page.add(f"<p>{page.link(files['md'], 'Markdown')}, {page.link(files['csv'], 'CSV')}</p>")
    page.markdown_file(files["md"])
    page.add('<h2 id="tables">Tables</h2>')
    for n in grid.tables(config):
        d = results / "tables"
        page.add(f"<p>Table {n}: {page.link(d / f'table{n}.md', 'Markdown')}, "
                 f"{page.link(d / f'table{n}.tex', 'LaTeX')}, {page.link(d / f'table{n}.csv', 'CSV')}</p>")
        page.markdown_file(d / f"table{n}.md")

    figures = {n: grid.figure_files(config, n) for n in grid.FIGURE_STEMS}
    page.add('<h2 id="figure1">Figure 1: toy simulation</h2>')
    page.add(f"<p>{page.link(figures[1][0], 'PNG')}, {page.link(figures[1][1], 'PDF')}, results "
             f"{page.link(figure1_outputs(config)['results'], 'JSON')}, distances "
             f"{page.link(figure1_outputs(config)['table_csv'], 'CSV')}</p>")
    page.image(figures[1][0], "Figure 1")
    page.markdown_file(figure1_outputs(config)["table_md"])

    page.add('<h2 id="figure2">Figure 2: LLM-judge win rates of DSKD against KD</h2>')
    if 2 in grid.figure_numbers(config):
        _figure2(page, figures[2], figure2_outputs(config))
    else:
        page.add('<p class="notice">This configuration has no pair with both KD and DSKD students of the same '
                 'divergence, so there is nothing to judge.</p>')

    page.add('<h2 id="figure3">Figure 3: representation distance to the teacher</h2>')
    if 3 in grid.figure_numbers(config):
        _figure3(page, figures[3], figure3_outputs(config))
    else:
        divergence = grid.figure_settings(config, "representation")["divergence"]
        page.add('<p class="notice">This configuration has no same-vocabulary pair with SFT, KD and DSKD students '
                 f'of the divergence {_esc(divergence)}.</p>')

    page.add('<h2 id="training">Training curves</h2><ul class="files">')
    for cell in grid.cells(config):
        page.add(f"<li>{_esc(cell.id)}: {page.link(grid.training_curve_file(config, cell), 'PNG')}</li>")
    page.add("</ul>")

    page.add('<h2 id="notebooks">Rendered notebooks</h2><ul class="files">')
    for label, path in notebooks(config):
        page.add(f"<li>{page.link(path, label)}</li>")
    page.add("</ul>")
    if page.missing:
        page.add('<h2>Missing files</h2><ul>' + "".join(f"<li>{_esc(p)}</li>" for p in page.missing) + "</ul>")
    body = "\n".join(page.parts)
    text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>DSKD reproduction report</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
    return text, page.missing


def _figure3(page: _Page, files: list[Path], outputs: dict) -> None:
    page.add(f"<p>{page.link(files[0], 'PNG')}, {page.link(files[1], 'PDF')}, values "
             f"{page.link(outputs['results'], 'JSON')}</p>")
    page.image(files[0], "Figure 3")
    page.markdown_file(outputs["table_md"])


def _figure2(page: _Page, files: list[Path], outputs: dict) -> None:
    from .io import read_json

    if not outputs["results"].exists():
        page.missing.append(outputs["results"])
        page.add('<p class="missing">The judge step has not run.</p>')
        return
    result = read_json(outputs["results"])
    status = result["status"]
    if not status["configured"]:
        page.add(f'<p class="notice">{_esc(status["reason"])}</p>')
        return
    settings = result["settings"]
    page.add(f"<p>Judge <code>{_esc(settings['model'])}</code> at "
             f"<code>{_esc(settings['base_url'] or 'the OpenAI API')}</code>, temperature {settings['temperature']}, "
             f"{settings['n_prompts']} {_esc(settings['test_set'])} prompts, seed-{settings['generation_seed']} "
             f"generations. {page.link(files[0], 'PNG')}, {page.link(files[1], 'PDF')}, verdicts with prompts "
             f"{page.link(outputs['verdicts'], 'JSONL')}</p>")
    page.image(files[0], "Figure 2")
    from .figures import judge_table

    page.add(markdown_to_html(judge_table(result["summary"])))


def write_report(config: dict) -> tuple[Path, list[Path]]:
    """Write ``results/report/index.html`` atomically; returns its path and the files it could not link."""
    from .io import write_text

    text, missing = build_report(config)
    target = grid.report_file(config)
    write_text(target, text)
    return target, missing


def main(argv: list[str] | None = None) -> None:
    """``python -m repro.report CONFIG``: build the report from the results that exist."""
    import argparse

    from .config import load_config

    parser = argparse.ArgumentParser(prog="python -m repro.report", description=main.__doc__)
    parser.add_argument("config", help="the workflow configuration (YAML)")
    args = parser.parse_args(argv)
    path, missing = write_report(load_config(args.config))
    print(path)
    for absent in missing:
        print(f"missing: {absent}")


if __name__ == "__main__":
    main()
