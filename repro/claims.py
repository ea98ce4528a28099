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

No torch import: the report and the tables step call this.
"""
from __future__ import annotations

import csv
import io
import statistics

from . import grid, names, tables
from .analysis import figure1_outputs, figure3_outputs
from .io import read_json, write_text

# What PAPER.md section 5 reports for each kind of comparison (numbers where it gives them).
PAPER_DSKD_GAIN = {1: "+0.43 to +1.39", 2: "+0.82 to +3.35"}
PAPER_CMA = {("qwen_gpt2", "mined"): "+0.56", ("qwen_gpt2", "uld"): "+0.91", ("qwen_gpt2", "seqkd"): "+1.89",
             ("mistral_tinyllama", "mined"): "> +5 (AKL)"}
HEADER = ["Claim", "Where", "Comparison", "Paper", "Miniature: Δ Avg [95% interval]", "Runs", "Verdict"]


def verdict(low: float | None, high: float | None, threshold: float = 0.0) -> str:
    """``holds`` when the interval lies above ``threshold``, ``does not hold`` when it lies below, else
    ``undecided``; ``not measured`` without an interval."""
    if low is None or high is None:
        return "not measured"
    if low > threshold:
        return "holds"
    if high < threshold:
        return "does not hold"
    return "undecided"


def _compared(config: dict, claim: str, where: str, a: grid.Cell, b: grid.Cell, paper: str,
              threshold: float = 0.0) -> dict:
    """The claim row "mean Avg of ``a`` exceeds that of ``b`` (by more than ``threshold``)"."""
    result = tables.compare(config, a, b)
    row = {"claim": claim, "where": where, "comparison": f"{grid.row_title(a, 1)} - {grid.row_title(b, 1)} "
                                                        f"({a.pair})", "a": a.id, "b": b.id, "paper": paper}
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


def table_claims(config: dict) -> list[dict]:
    """The claims about rows of Tables 1-3, in order."""
    rows = []
    for pair, spec in config["pairs"].items():
        sft = grid.sft_cell(config, pair)
        if sft is not None:
            rows.append(_compared(config, "premise: the teacher at least 5 points above the student's SFT",
                                  f"Table {spec['table']}", grid.Cell(pair, "sft", role="teacher"), sft,
                                  "clearly stronger teacher", threshold=5.0))
    same_divergence = grid.judge_comparisons(config)  # (DSKD, KD) cells of the same pair and divergence
    for pair, spec in config["pairs"].items():
        for dskd, kd in (c for c in same_divergence if c[0].pair == pair):
            paper_kd, paper_dskd = (tables.PAPER_AVG.get((pair, m, dskd.divergence)) for m in ("kd", "dskd"))
            paper = (f"{paper_dskd - paper_kd:+.2f}" if paper_kd is not None and paper_dskd is not None
                     else PAPER_DSKD_GAIN.get(spec["table"], "above"))
            rows.append(_compared(config, "KD w/ DSKD above KD", f"Table {spec['table']}", dskd, kd, paper))
        sft = grid.sft_cell(config, pair)
        for d in config["divergences"]:
            kd = grid.Cell(pair, "kd", divergence=d)
            if sft is not None and grid.has_cell(config, kd):
                rows.append(_compared(config, "KD above the student's SFT", f"Table {spec['table']}", kd, sft,
                                      "above"))
    for pair, spec in config["pairs"].items():
        cma = _best_on_dev(config, [c for c in grid.cells(config) if c.pair == pair and c.method == "dskd_cma"])
        for baseline in ("mined", "uld", "seqkd"):
            other = grid.Cell(pair, baseline)
            if cma is not None and grid.has_cell(config, other):
                rows.append(_compared(config, "DSKD-CMA (divergence best on dev) above "
                                      f"{names.METHODS[baseline].title}", f"Table {spec['table']}", cma, other,
                                      PAPER_CMA.get((pair, baseline), "above")))
    for pair in config.get("ablation", []):
        for d in config["divergences"]:
            kd, student, dual = (grid.Cell(pair, m, divergence=d) for m in ("kd", "dskd_student_space", "dskd"))
            if grid.has_cell(config, student) and grid.has_cell(config, kd):
                rows.append(_compared(config, "student space only above different spaces (KD)", "Table 3",
                                      student, kd, "above (\"a major boost\")"))
            if grid.has_cell(config, student) and grid.has_cell(config, dual):
                rows.append(_compared(config, "dual space above student space only", "Table 3", dual, student,
                                      "above (\"refines further\")"))
    return rows


def figure1_claims(results: dict) -> list[dict]:
    """Figure 1 (the toy simulation): per divergence, the different-head distance minus the shared-head distance
    to the teacher, with the number of repetitions (the same problem in both settings) in which it is positive."""
    rows = []
    for name, settings in results["divergences"].items():
        different, shared = settings["different"], settings["shared"]
        runs_d, runs_s = different.get("distance_after_runs"), shared.get("distance_after_runs")
        delta = different["distance_after"]["mean"] - shared["distance_after"]["mean"]
        row = {"claim": "a shared head ends closer to the teacher than different heads", "where": "Figure 1",
               "comparison": f"distance, different - shared heads ({names.DIVERGENCE_TITLES.get(name, name)})",
               "a": "shared", "b": "different", "paper": "closer (aligned)", "delta": delta, "low": None,
               "high": None}
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
            row = {"claim": "the DSKD student's representation closer to the teacher's than KD's",
                   "where": "Figure 3", "comparison": f"{kind.replace('_', '-')} distance, KD - DSKD ({pair})",
                   "a": "KD", "b": "DSKD", "paper": "much smaller distance"}
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


def _measured(row: dict) -> str:
    if row["delta"] is None:
        return "-"
    if row["low"] is None:
        return f"{row['delta']:+.2f}"
    interval = "range" if row["where"] == "Figure 1" else ""
    return f"{row['delta']:+.2f} [{interval + ' ' if interval else ''}{row['low']:+.2f}, {row['high']:+.2f}]"


def to_markdown(rows: list[dict]) -> str:
    counts = {v: sum(r["verdict"].startswith(v) for r in rows) for v in ("holds", "does not hold", "undecided")}
    lines = ["## The paper's claims in this run", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        lines.append("| " + " | ".join([r["claim"], r["where"], r["comparison"], r["paper"], _measured(r),
                                        r["runs"], r["verdict"]]) + " |")
    lines += ["", f"{len(rows)} comparisons: {counts['holds']} hold, {counts['does not hold']} do not hold, "
                  f"{counts['undecided']} undecided.",
              "", "Tables: Δ is the difference of the two rows' mean Avg Rouge-L over their training runs (Runs: how "
                  "many on each side), with a 95% hierarchical-bootstrap interval over training runs, then prompts "
                  f"({tables.BOOTSTRAP:,} replicates); it holds when the whole interval is above 0 (the premise: "
                  "above 5), does not hold when the whole interval is below, and is undecided otherwise. DSKD-CMA "
                  "stands for its divergence with the best mean dev Rouge-L. Figure 1: the distance difference "
                  "and its range over the simulation's repetitions. Figure 3: the KD student's mean distance to "
                  "the teacher minus the DSKD student's (positive: DSKD closer), interval over training runs, then "
                  "examples."]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["claim"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def claims_files(config: dict) -> dict:
    d = grid.results_dir(config) / "tables"
    return {"md": d / "claims.md", "csv": d / "claims.csv"}


def write_claims(config: dict) -> list:
    """Write ``tables/claims.md`` and ``claims.csv``; return their paths."""
    rows = claims(config)
    files = claims_files(config)
    write_text(files["md"], to_markdown(rows))
    write_text(files["csv"], to_csv(rows))
    return [files["md"], files["csv"]]
