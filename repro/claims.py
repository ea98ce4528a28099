"""The paper's claims, checked on a finished run: for each, the paper's number, the run's measured value with its
interval over training runs, and a verdict.

A claim about two rows of the tables is a difference of their mean Avg Rouge-L over training runs with the 95%
interval of ``repro.tables.hierarchical_bootstrap`` (training runs, then prompts): it *holds* when the whole interval
is above 0, *does not hold* when the whole interval is below 0, and is *undecided* otherwise. Where a claim depends
on a choice among rows (which DSKD-CMA divergence stands for the method), the choice is made on the dev set. The
claims (PAPER.md section 5 and the explainer):

- the premise: each teacher is clearly stronger than its student's SFT (the issue's bar: at least 5 points);
- Tables 1-2: KD w/ DSKD above KD for every divergence; KD above the student's SFT;
- Tables 1-2, different vocabularies: DSKD-CMA above MinED, ULD and SeqKD;
- Table 3: KD in the student space only above KD in different spaces; the dual space above the student space only;
- Figure 1 (toy simulation): a shared head ends closer to the teacher than different heads (per repetition);
- Figure 3: the DSKD student's representation structure closer to the teacher's than the KD student's (every
  training run of both rows, the interval over runs, then examples).

Every row also carries its ``group`` (one sentence of the summary and one panel of the forest plot per group),
a short ``label`` within the group, the ``unit`` of its difference, the ``threshold`` its interval is judged against
and the paper's number as bounds (``paper_low``, ``paper_high``; empty where the paper only says "above"), so the
summary (``summarize``, printed by ``python -m repro.claims``) and the forest plot (``repro.figures.plot_claims``)
read everything from ``claims.csv``.

No torch import: the report and the tables step call this.
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
from pathlib import Path

from . import grid, layout, names, tables
from .analysis import figure1_outputs, figure3_outputs
from .io import read_json, write_text
from .validation import load_config
from .verdicts import VERDICTS, verdict, verdict_class

# What PAPER.md section 5 reports for each kind of comparison, as (low, high) bounds of the difference: a single
# number where low == high, a range over divergences, or a lower bound where high is None.
PAPER_DSKD_GAIN = {1: (0.43, 1.39), 2: (0.82, 3.35)}
PAPER_CMA = {("qwen_gpt2", "mined"): (0.56, 0.56), ("qwen_gpt2", "uld"): (0.91, 0.91),
             ("qwen_gpt2", "seqkd"): (1.89, 1.89), ("mistral_tinyllama", "mined"): (5.0, None)}
PAPER_CMA_NOTES = {("mistral_tinyllama", "mined"): " (AKL)"}  # the paper's number is for one divergence
HEADER = ["Claim", "Where", "Comparison", "Paper", "Miniature: Δ Avg [95% interval]", "Runs", "Verdict"]
FIELDS = ["group", "label", "claim", "where", "comparison", "a", "b", "paper", "paper_low", "paper_high", "unit",
          "threshold", "delta", "low", "high", "runs", "verdict"]
NUMBERS = ("paper_low", "paper_high", "threshold", "delta", "low", "high")  # the CSV's numeric columns
UNIT_TABLES = "Δ Avg Rouge-L"
def paper_text(bounds: tuple[float, float | None], note: str = "") -> str:
    """How the claims table prints the paper's difference: ``+0.56``, ``+0.43 to +1.39`` or ``> +5``."""
    low, high = bounds
    if high is None:
        return f"> {low:+g}{note}"
    return f"{low:+.2f}{note}" if low == high else f"{low:+.2f} to {high:+.2f}{note}"


def _compared(config: dict, claim: str, where: str, a: grid.Cell, b: grid.Cell, paper: str | tuple,
              threshold: float = 0.0, *, group: str, label: str, note: str = "") -> dict:
    """The claim row "mean Avg of ``a`` exceeds that of ``b`` (by more than ``threshold``)"; ``paper``: the
    paper's words, or its (low, high) bounds (``paper_text``)."""
    result = tables.compare(config, a, b)
    bounds = paper if isinstance(paper, tuple) else (None, None)
    row = {"group": group, "label": label, "claim": claim, "where": where,
           "comparison": f"{grid.row_title(a, 1)} - {grid.row_title(b, 1)} ({a.pair})", "a": a.id, "b": b.id,
           "paper": paper_text(paper, note) if isinstance(paper, tuple) else paper, "paper_low": bounds[0],
           "paper_high": bounds[1], "unit": UNIT_TABLES, "threshold": threshold}
    if result is None:
        return {**row, "delta": None, "low": None, "high": None, "runs": "", "verdict": "not measured"}
    return {**row, "delta": result["delta"], "low": result["low"], "high": result["high"],
            "runs": f"{result['runs'][0]} vs {result['runs'][1]}",
            "verdict": verdict(result["low"], result["high"], threshold)}


def _best_on_dev(config: dict, candidates: list[grid.Cell]) -> grid.Cell | None:
    """The candidate row with the highest mean best-dev Rouge-L over its finished runs (None if none finished)."""
    scored = []
    for cell in candidates:
        finished = tables.finished_runs(config, cell)
        if finished:
            scored.append((statistics.fmean(s["best_dev_rougeL"] for _, s in finished), cell))
    return max(scored, key=lambda x: x[0])[1] if scored else None


def _divergence(cell: grid.Cell) -> str:
    return names.DIVERGENCE_TITLES.get(cell.divergence, cell.divergence)


def table_claims(config: dict) -> list[dict]:
    """The claims about rows of Tables 1-3, in order, each group's rows together."""
    rows = []
    premise = "Premise: each teacher at least 5 points above its student's SFT"
    for pair, spec in config["pairs"].items():
        sft = grid.sft_cell(config, pair)
        if sft is not None:
            rows.append(_compared(config, "premise: the teacher at least 5 points above the student's SFT",
                                  f"Table {spec['table']}", grid.Cell(pair, "sft", role="teacher"), sft,
                                  "clearly stronger teacher", threshold=5.0, group=premise,
                                  label=f"{pair} (Table {spec['table']})"))
    same_divergence = grid.judge_comparisons(config)  # (DSKD, KD) cells of the same pair and divergence
    for pair, spec in config["pairs"].items():
        where = f"Table {spec['table']}"
        for dskd, kd in (c for c in same_divergence if c[0].pair == pair):
            paper_kd, paper_dskd = (tables.PAPER_AVG.get((pair, m, dskd.divergence)) for m in ("kd", "dskd"))
            paper = ((round(paper_dskd - paper_kd, 2),) * 2 if paper_kd is not None and paper_dskd is not None
                     else PAPER_DSKD_GAIN.get(spec["table"], "above"))
            rows.append(_compared(config, "KD w/ DSKD above KD", where, dskd, kd, paper,
                                  group=f"KD w/ DSKD above KD ({where}, {pair})", label=_divergence(dskd)))
        sft = grid.sft_cell(config, pair)
        for d in config["divergences"]:
            kd = grid.Cell(pair, "kd", divergence=d)
            if sft is not None and grid.has_cell(config, kd):
                rows.append(_compared(config, "KD above the student's SFT", where, kd, sft, "above",
                                      group=f"KD above the student's SFT ({where}, {pair})", label=_divergence(kd)))
    for pair, spec in config["pairs"].items():
        cma = _best_on_dev(config, [c for c in grid.cells(config) if c.pair == pair and c.method == "dskd_cma"])
        where = f"Table {spec['table']}"
        for baseline in ("mined", "uld", "seqkd"):
            other = grid.Cell(pair, baseline)
            if cma is not None and grid.has_cell(config, other):
                title = names.METHODS[baseline].title
                rows.append(_compared(config, f"DSKD-CMA (divergence best on dev) above {title}", where, cma, other,
                                      PAPER_CMA.get((pair, baseline), "above"),
                                      group=f"DSKD-CMA ({_divergence(cma)}, best on dev) above the baselines "
                                            f"({where}, {pair})", label=title,
                                      note=PAPER_CMA_NOTES.get((pair, baseline), "")))
    for pair in config.get("ablation", []):
        for a, b, claim, paper, group in (
                ("dskd_student_space", "kd", "student space only above different spaces (KD)",
                 "above (\"a major boost\")", f"Table 3: the student space only above KD ({pair})"),
                ("dskd", "dskd_student_space", "dual space above student space only", "above (\"refines further\")",
                 f"Table 3: the dual space above the student space only ({pair})")):
            for d in config["divergences"]:
                cell_a, cell_b = grid.Cell(pair, a, divergence=d), grid.Cell(pair, b, divergence=d)
                if grid.has_cell(config, cell_a) and grid.has_cell(config, cell_b):
                    rows.append(_compared(config, claim, "Table 3", cell_a, cell_b, paper, group=group,
                                          label=_divergence(cell_a)))
    return rows


def figure1_claims(results: dict) -> list[dict]:
    """Figure 1 (the toy simulation): per divergence, the different-head distance minus the shared-head distance
    to the teacher, with the number of repetitions (the same problem in both settings) in which it is positive."""
    rows = []
    for name, settings in results["divergences"].items():
        different, shared = settings["different"], settings["shared"]
        runs_d, runs_s = different.get("distance_after_runs"), shared.get("distance_after_runs")
        delta = different["distance_after"]["mean"] - shared["distance_after"]["mean"]
        title = names.DIVERGENCE_TITLES.get(name, name)
        row = {"group": "Figure 1: a shared head ends closer to the teacher than different heads", "label": title,
               "claim": "a shared head ends closer to the teacher than different heads", "where": "Figure 1",
               "comparison": f"distance, different - shared heads ({title})", "a": "shared", "b": "different",
               "paper": "closer (aligned)", "paper_low": None, "paper_high": None,
               "unit": "Δ toy distance to the teacher (range over repetitions)", "threshold": 0.0, "delta": delta,
               "low": None, "high": None}
        if runs_d is None or runs_s is None:
            rows.append({**row, "runs": "", "verdict": "not measured"})
            continue
        wins = sum(d > s for d, s in zip(runs_d, runs_s))
        n = len(runs_d)
        row["low"], row["high"] = (min(d - s for d, s in zip(runs_d, runs_s)),
                                   max(d - s for d, s in zip(runs_d, runs_s)))
        outcome = "holds" if wins == n else "does not hold" if wins == 0 else "undecided"
        rows.append({**row, "runs": f"{n} repetitions", "verdict": f"{outcome} ({wins} of {n} repetitions)"})
    return rows


def figure3_claims(results: dict) -> list[dict]:
    """Figure 3: per pair and distance, the KD student's mean distance to the teacher minus the DSKD student's
    (positive: DSKD closer), with the hierarchical-bootstrap interval over training runs, then examples."""
    rows = []
    by_run = results.get("values_by_run")
    for pair, students in results["values"].items():
        for kind in ("cosine", "inner_product"):
            what = kind.replace("_", "-")
            row = {"group": "Figure 3: the DSKD student's representation closer to the teacher's than KD's",
                   "label": f"{what} ({pair})",
                   "claim": "the DSKD student's representation closer to the teacher's than KD's",
                   "where": "Figure 3", "comparison": f"{what} distance, KD - DSKD ({pair})", "a": "KD", "b": "DSKD",
                   "paper": "much smaller distance", "paper_low": None, "paper_high": None,
                   "unit": f"Δ {what} distance", "threshold": 0.0}
            if by_run is None:  # a results file of one run per student: measured, not decided
                kd, dskd = students["KD"][kind], students["DSKD"][kind]
                rows.append({**row, "delta": statistics.fmean(kd) - statistics.fmean(dskd), "low": None,
                             "high": None, "runs": "1 vs 1", "verdict": "undecided (one training run each)"})
                continue
            kd = [{kind: run[kind]} for run in by_run[pair]["KD"].values()]
            dskd = [{kind: run[kind]} for run in by_run[pair]["DSKD"].values()]
            result = tables.hierarchical_bootstrap(kd, dskd)
            rows.append({**row, "delta": result["delta"], "low": result["low"], "high": result["high"],
                         "runs": f"{len(kd)} vs {len(dskd)}", "verdict": verdict(result["low"], result["high"])})
    return rows


def claims(config: dict) -> list[dict]:
    """Every claim row of a finished (or partly finished) run."""
    rows = table_claims(config)
    if figure1_outputs(config)["results"].exists():
        rows += figure1_claims(read_json(figure1_outputs(config)["results"]))
    if 3 in grid.figure_numbers(config) and figure3_outputs(config)["results"].exists():
        rows += figure3_claims(read_json(figure3_outputs(config)["results"]))
    return rows


def number(value: float, unit: str) -> str:
    """A difference as the claims print it: Avg Rouge-L to two decimals (as the tables), a distance to three
    significant digits (Figure 3's cosine distances differ in the third decimal)."""
    return f"{value:+.2f}" if unit == UNIT_TABLES else f"{value:+.3g}"


def measured(row: dict) -> str:
    """A row's difference as the claims table prints it: ``-0.39 [-1.22, +0.54]`` (Figure 1: ``[range ...]``)."""
    if row["delta"] is None:
        return "-"
    unit = row["unit"]
    if row["low"] is None:
        return number(row["delta"], unit)
    interval = "range " if row["where"] == "Figure 1" else ""
    return f"{number(row['delta'], unit)} [{interval}{number(row['low'], unit)}, {number(row['high'], unit)}]"


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each group, groups in the order of their first row."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["group"], []).append(r)
    return out


def counts(rows: list[dict]) -> dict[str, int]:
    """How many rows have each verdict (``VERDICTS``)."""
    return {v: sum(verdict_class(r["verdict"]) == v for r in rows) for v in VERDICTS}


def counts_line(rows: list[dict]) -> str:
    """``56 comparisons: 12 hold, 8 do not hold, 36 undecided.`` (and how many were not measured, if any)."""
    c = counts(rows)
    unmeasured = f", {c['not measured']} not measured" if c["not measured"] else ""
    return (f"{len(rows)} comparisons: {c['holds']} hold, {c['does not hold']} do not hold, {c['undecided']} "
            f"undecided{unmeasured}.")


def group_sentence(group: str, rows: list[dict]) -> str:
    """One sentence on a group of claims: which rows hold, do not hold or are undecided (by their labels), and the
    range of Δ: ``KD w/ DSKD above KD (Table 2, llama): holds for AKL; does not hold for KL, JS; undecided for RKL
    (Δ -2.32 to +0.36).``"""
    parts = []
    for v in VERDICTS:
        members = [r["label"] for r in rows if verdict_class(r["verdict"]) == v]
        if len(members) == len(rows):
            parts.append(v if len(rows) == 1 else f"{v} for both" if len(rows) == 2 else f"{v} for all {len(rows)}")
        elif members:
            parts.append(f"{v} for {', '.join(members)}")
    done = [r for r in rows if r["delta"] is not None]
    if len(done) == 1:
        spread = f" (Δ {measured(done[0])})"
    elif done:
        deltas = [r["delta"] for r in done]
        spread = f" (Δ {number(min(deltas), done[0]['unit'])} to {number(max(deltas), done[0]['unit'])})"
    else:
        spread = ""
    return f"{group}: {'; '.join(parts)}{spread}."


def summarize(rows: list[dict]) -> dict:
    """The summary of a claims table: ``{"counts": {verdict: k}, "line": counts_line, "groups": [{"group",
    "counts", "sentence"}]}``, one sentence per group in the table's order."""
    return {"counts": counts(rows), "line": counts_line(rows),
            "groups": [{"group": g, "counts": counts(members), "sentence": group_sentence(g, members)}
                       for g, members in groups(rows).items()]}


def summary_markdown(rows: list[dict]) -> str:
    """The summary as Markdown: the counts in bold, then one bullet per group (what ``python -m repro.claims``
    prints and the README quotes)."""
    summary = summarize(rows)
    return "\n".join([f"**{summary['line']}**", ""] + [f"- {g['sentence']}" for g in summary["groups"]]) + "\n"


def note() -> str:
    """How the claims table's differences, intervals and verdicts are made (printed under it)."""
    return ("Tables: Δ is the difference of the two rows' mean Avg Rouge-L over their training runs (Runs: how "
            "many on each side), with a 95% hierarchical-bootstrap interval over training runs, then prompts "
            f"({tables.BOOTSTRAP:,} replicates); it holds when the whole interval is above 0 (the premise: "
            "above 5), does not hold when the whole interval is below, and is undecided otherwise. DSKD-CMA "
            "stands for its divergence with the best mean dev Rouge-L. Figure 1: the distance difference "
            "and its range over the simulation's repetitions. Figure 3: the KD student's mean distance to "
            "the teacher minus the DSKD student's (positive: DSKD closer), interval over training runs, then "
            "examples.")


def to_markdown(rows: list[dict]) -> str:
    lines = ["## The paper's claims in this run", "", summary_markdown(rows), "| " + " | ".join(HEADER) + " |",
             "|" + "---|" * len(HEADER)]
    for r in rows:
        lines.append("| " + " | ".join([r["claim"], r["where"], r["comparison"], r["paper"], measured(r),
                                        r["runs"], r["verdict"]]) + " |")
    lines += ["", note()]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_claims(path: str | Path) -> list[dict]:
    """The rows of a ``claims.csv`` as ``claims`` made them: the numeric columns (``NUMBERS``) as floats, an empty
    cell as None."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a claims table of this version, columns {', '.join(missing)} missing "
                             "(run the make_claims step again)")
        rows = list(reader)
    for n, row in enumerate(rows, start=2):
        for key in NUMBERS:
            try:
                row[key] = float(row[key]) if row[key] not in ("", None) else None
            except ValueError:
                raise ValueError(f"{path}, line {n}: {key} is {row[key]!r}, expected a number or nothing") from None
    return rows


def claims_files(config: dict) -> dict:
    return layout.claims_files(grid.results_dir(config))


def write_claims(config: dict) -> list:
    """Write ``tables/claims.md`` and ``claims.csv``; return their paths."""
    rows = claims(config)
    files = claims_files(config)
    write_text(files["md"], to_markdown(rows))
    write_text(files["csv"], to_csv(rows))
    return [files["md"], files["csv"]]


def main(argv: list[str] | None = None) -> None:
    """``python -m repro.claims [SOURCE]``: print the summary of a run's claims (the counts, one sentence per group of
    claims) from its claims.csv; SOURCE is that CSV or the run's configuration (YAML)."""
    parser = argparse.ArgumentParser(prog="python -m repro.claims", description=main.__doc__)
    parser.add_argument("source", nargs="?", default="results/tables/claims.csv",
                        help="claims.csv, or the workflow configuration whose results hold it "
                             "(default: results/tables/claims.csv)")
    source = Path(parser.parse_args(argv).source)
    path = source if source.suffix == ".csv" else claims_files(load_config(source))["csv"]
    if not path.exists():
        raise SystemExit(f"{path}: no claims table (the workflow's make_claims step writes it)")
    print(summary_markdown(read_claims(path)), end="")


if __name__ == "__main__":
    main()
