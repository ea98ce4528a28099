"""The experiment grid: which table cells a config asks for, where their files live, what each job is given.

No torch import: the Snakefile calls this while building the DAG, which must stay instant.

A cell is one table row of one pair: the teacher row (``{pair}/teacher``, SFT of the teacher), the student SFT row
(``{pair}/sft``) and one row per KD method and divergence (``{pair}/kd-kl``, ...). Tables 1 and 2 hold the cells of
the pairs assigned to them (``pairs.<pair>.table``); Table 3, the ablation, re-uses the KD and DSKD cells of the
pairs listed in ``ablation`` beside their ``dskd_student_space`` cells.

A run is one training of a cell with one training seed (a ``Cell`` whose ``seed`` is set; one job each): every
student row is trained once per seed of ``training.seeds`` and its table entry is the mean over those runs; the
teacher row is trained once, with the first seed, and every student run of the pair distils from that teacher (as in
the paper: one teacher per pair). Every run has its own folder, ``runs/{pair}/{row}/seed{seed}/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import layout, names
from .names import ABLATION_METHODS, DIVERGENCE_TITLES, TEST_SETS
from .settings import FIGURE_DEFAULTS, role_training, training_value


@dataclass(frozen=True)
class Cell:
    pair: str
    method: str
    role: str = "student"
    divergence: str | None = None
    seed: int | None = None  # the training seed of a run; None for the row itself

    @property
    def name(self) -> str:
        if self.role == "teacher":
            return "teacher"
        return f"{self.method}-{self.divergence}" if self.divergence else self.method

    @property
    def id(self) -> str:
        return f"{self.pair}/{self.name}"

    @property
    def run_id(self) -> str:
        """``{pair}/{row}/seed{seed}``: the id of a run."""
        return f"{self.id}/seed{_seed_of(self)}"

    @property
    def row(self) -> "Cell":
        """The table row of a run (the cell without its seed)."""
        return Cell(self.pair, self.method, self.role, self.divergence)

    def with_seed(self, seed: int) -> "Cell":
        return Cell(self.pair, self.method, self.role, self.divergence, seed)

    @property
    def title(self) -> str:
        """Row label in the tables."""
        if self.role == "teacher":
            return "Teacher (SFT)"
        title = names.METHODS[self.method].title if self.method in names.METHODS else self.method
        return f"{title} ({DIVERGENCE_TITLES.get(self.divergence, self.divergence)})" if self.divergence else title

    @property
    def needs_teacher(self) -> bool:
        return self.role == "student" and names.method(self.method).needs_teacher

    @property
    def reads_teacher_states(self) -> bool:
        """Whether the cell reads the teacher's hidden states (white-box KD; SeqKD reads only its text)."""
        return self.needs_teacher and not names.method(self.method).black_box


def cells(config: dict) -> list[Cell]:
    """Every table cell of ``config``, teacher rows first within each pair."""
    out = []
    for pair, spec in config["pairs"].items():
        out.append(Cell(pair, "sft", role="teacher"))
        for method in spec.get("methods", config["methods"]):
            if names.method(method).needs_divergence:
                out += [Cell(pair, method, divergence=d) for d in config["divergences"]]
            else:
                out.append(Cell(pair, method))
    return out


def find_cell(config: dict, pair: str, name: str) -> Cell:
    for cell in cells(config):
        if cell.pair == pair and cell.name == name:
            return cell
    raise KeyError(f"no cell {pair}/{name} in this configuration")


def training_seeds(config: dict) -> list[int]:
    """The training seeds of every student row (``training.seeds``; the first one also trains the teacher)."""
    return list(config["training"]["seeds"])


def cell_runs(config: dict, cell: Cell) -> list[Cell]:
    """The runs of a row: one per training seed for a student row, one (the first seed) for the teacher row."""
    seeds = training_seeds(config)
    return [cell.with_seed(s) for s in (seeds[:1] if cell.role == "teacher" else seeds)]


def runs(config: dict) -> list[Cell]:
    """Every run of ``config`` (one job each), row by row."""
    return [run for cell in cells(config) for run in cell_runs(config, cell)]


def first_run(config: dict, cell: Cell) -> Cell:
    """The run of ``cell`` with the first training seed (what Figures 2-3 and the teacher of a pair use)."""
    return cell.with_seed(training_seeds(config)[0])


def find_run(config: dict, pair: str, name: str, seed: int) -> Cell:
    cell = find_cell(config, pair, name)
    for run in cell_runs(config, cell):
        if run.seed == seed:
            return run
    seeds = [r.seed for r in cell_runs(config, cell)]
    raise KeyError(f"no run of {cell.id} with training seed {seed} in this configuration (its seeds: {seeds})")


def _seed_of(run: Cell) -> int:
    if run.seed is None:
        raise ValueError(f"{run.id} is a table row, not a run: give it a training seed (grid.cell_runs)")
    return run.seed


def results_dir(config: dict) -> Path:
    return Path(config["results_dir"])


def _folder_name(name: str, key: str) -> str:
    """``name`` (of config key ``key``) when it is a plain folder name, so that the path built with it lies inside
    the results folder; else ValueError. The schema refuses such names already (``$defs.name``); this holds for a
    config that never met the schema as well."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(s in name for s in ("/", "\\", "\0")):
        raise ValueError(f"config key '{key}': {name!r} is not a plain folder name (not empty, '.', '..' or a path), "
                         f"so a folder named after it would not lie inside the results folder")
    return name


def data_dir(config: dict) -> Path:
    return layout.data_dir(results_dir(config))


def data_files(config: dict) -> list[Path]:
    d = data_dir(config)
    return [d / "train.jsonl", d / "dev.jsonl"] + [d / "test" / f"{t}.jsonl" for t in TEST_SETS]


def tokenizer_dir(config: dict, name: str) -> Path:
    return layout.tokenizer_dir(results_dir(config), _folder_name(name, f"tokenizers.{name}"))


def base_model_dir(config: dict, name: str) -> Path:
    return layout.base_model_dir(results_dir(config), _folder_name(name, f"models.{name}"))


def built_models(config: dict) -> list[str]:
    """Models the workflow builds itself (config entries with ``arch``), as opposed to hub ids."""
    return [name for name, spec in config["models"].items() if "arch" in spec]


def pretraining(config: dict) -> dict | None:
    """The ``pretraining`` section when it is enabled (every built base model is pretrained before any row trains
    from it), else None."""
    section = config.get("pretraining")
    return section if section and section.get("enabled", False) else None


def pretrained_model_dir(config: dict, name: str) -> Path:
    return layout.pretrained_model_dir(results_dir(config), _folder_name(name, f"models.{name}"))


def pretraining_corpus_file(config: dict) -> Path:
    return layout.pretraining_corpus_file(results_dir(config))


def start_model_dir(config: dict, name: str) -> Path:
    """The folder a built model's rows start from: the pretrained base with ``pretraining`` enabled, else the
    randomly initialised one."""
    return pretrained_model_dir(config, name) if pretraining(config) else base_model_dir(config, name)


def model_source(config: dict, name: str) -> str:
    """Where to load model ``name`` from: its hub id / path, or the folder the workflow saves it in."""
    spec = config["models"][name]
    return spec["id"] if "id" in spec else str(start_model_dir(config, name))


def run_dir(config: dict, run: Cell) -> Path:
    """The folder of one run: ``runs/{pair}/{row}/seed{seed}``."""
    return layout.run_dir(results_dir(config), _folder_name(run.pair, f"pairs.{run.pair}"), run.name, _seed_of(run))


def scores_file(config: dict, cell: Cell) -> Path:
    return layout.scores_file(run_dir(config, cell))


def checkpoint_dir(config: dict, cell: Cell) -> Path:
    return layout.model_dir(run_dir(config, cell))


def teacher_cell(cell: Cell) -> Cell:
    """The teacher row of a cell's pair."""
    return Cell(cell.pair, "sft", role="teacher")


def teacher_run(config: dict, cell: Cell) -> Cell:
    """The one run of the teacher that every student run of the pair distils from."""
    return first_run(config, teacher_cell(cell))


def train_summary_file(config: dict, cell: Cell) -> Path:
    """Written when a cell's training has finished (its best checkpoint is in place)."""
    return layout.train_summary_file(run_dir(config, cell))


def teacher_states_file(config: dict, pair: str) -> Path:
    """The teacher-state cache of a pair's teacher (``repro.teacher_states``)."""
    return layout.teacher_states_file(results_dir(config), _folder_name(pair, f"pairs.{pair}"))


def uses_teacher_states(config: dict, cell: Cell) -> bool:
    """Whether ``cell`` reads its teacher from the cache: a white-box student cell with ``training.teacher_cache``
    on (the default)."""
    return cell.reads_teacher_states and bool(training_value(cell_training(config, cell), "teacher_cache"))


def teacher_state_pairs(config: dict) -> dict[str, dict]:
    """The pairs that need a teacher-state cache, each with what its builder is given: the training settings of
    the pair's student cells and whether DSKD-CMA's statistics are needed."""
    out: dict[str, dict] = {}
    for cell in cells(config):
        if uses_teacher_states(config, cell):
            entry = out.setdefault(cell.pair, {"training": cell_training(config, cell), "cma": False})
            entry["cma"] = entry["cma"] or cell.method == "dskd_cma"
    return out


def separate_evaluation(config: dict) -> bool:
    """Whether evaluation runs as its own job per cell (``evaluation.separate_jobs``; the paper configuration) or
    inside the training job (the miniature: one notebook kernel per cell)."""
    return bool(config["evaluation"].get("separate_jobs", False))


def tables(config: dict) -> list[int]:
    """The paper tables this config fills: 1 and/or 2 from the pairs, 3 when ``ablation`` names pairs."""
    numbers = {pair["table"] for pair in config["pairs"].values()}
    return sorted(numbers | ({3} if config.get("ablation") else set()))


def table_cells(config: dict, table: int) -> list[Cell]:
    """The rows of ``table``, in order. Tables 1-2: every cell of their pairs except the student-space ablation;
    Table 3: per ablation pair and divergence, the KD, student-space-only and DSKD cells."""
    if table == 3:
        return [Cell(pair, method, divergence=d) for pair in config.get("ablation", [])
                for d in config["divergences"] for method in ABLATION_METHODS]
    return [c for c in cells(config) if config["pairs"][c.pair]["table"] == table
            and c.method != "dskd_student_space"]


def row_title(cell: Cell, table: int) -> str:
    if table == 3:
        divergence = DIVERGENCE_TITLES.get(cell.divergence, cell.divergence)
        return f"{names.METHODS[cell.method].ablation_title} ({divergence})"
    return cell.title


def sft_cell(config: dict, pair: str) -> Cell | None:
    """The student SFT cell that serves ``pair``: its own, or that of another pair with the same student model
    and student training (the paper shows one SFT row per student)."""
    spec = config["pairs"][pair]
    for name, other in [(pair, spec)] + list(config["pairs"].items()):
        if (other["student"] == spec["student"] and other["student_training"] == spec["student_training"]
                and "sft" in other.get("methods", config["methods"])):
            return Cell(name, "sft")
    return None


def table_file(config: dict, table: int, ext: str) -> Path:
    """``results/tables/table{n}.{ext}`` (ext: md, tex or csv)."""
    return layout.table_file(results_dir(config), table, ext)


def table_files(config: dict) -> list[Path]:
    return [table_file(config, n, ext) for n in tables(config) for ext in ("md", "tex", "csv")]


def cell_training(config: dict, cell: Cell) -> dict:
    """The training settings of a run (``repro.settings.TrainSettings`` fields): the global ``training`` section
    with its pair role's overrides, and the run's ``seed`` (a row: its first run's) in place of ``seeds``."""
    training = role_training(config, cell.pair, cell.role)
    training.pop("seeds", None)
    run = cell if cell.seed is not None else first_run(config, cell)
    return {**training, "seed": run.seed}


def cell_params(config: dict, cell: Cell, threads: int = 1) -> dict:
    """The papermill parameters of one run's notebook (plain YAML-able values; no secrets)."""
    _seed_of(cell)
    pair = config["pairs"][cell.pair]
    model_key = pair[cell.role]
    training = cell_training(config, cell)
    evaluation = dict(config["evaluation"])
    training["dev_seeds"] = evaluation.pop("dev_seeds")
    training["dev_check_seeds"] = training_value(evaluation, "dev_check_seeds")
    evaluation.pop("dev_check_seeds", None)
    evaluation.pop("separate_jobs", None)
    return {
        "cell_id": cell.run_id,
        "pair": cell.pair,
        "method": cell.method,
        "role": cell.role,
        "divergence": cell.divergence,
        "model": model_source(config, model_key),
        "teacher": str(checkpoint_dir(config, teacher_run(config, cell))) if cell.needs_teacher else None,
        "teacher_states": str(teacher_states_file(config, cell.pair)) if uses_teacher_states(config, cell) else None,
        "data_dir": str(data_dir(config)),
        "out_dir": str(run_dir(config, cell)),
        "training": training,
        "evaluation": evaluation,
        "threads": threads,
    }


# Figures (PAPER.md sections 2 and 4): Figure 1 the toy simulation, Figure 2 the LLM judge, Figure 3 the
# representation distance; file stems under results/figures, named after the paper's numbering.
FIGURE_STEMS = {1: "figure1_toy_simulation", 2: "figure2_judge_win_rates", 3: "figure3_representation_distance"}


def figure_settings(config: dict, name: str) -> dict:
    """``figures.<name>`` of the config over the paper's defaults (``repro.settings.FIGURE_DEFAULTS``)."""
    return {**FIGURE_DEFAULTS[name], **config.get("figures", {}).get(name, {})}


def figures_dir(config: dict) -> Path:
    return layout.figures_dir(results_dir(config))


def analysis_dir(config: dict) -> Path:
    """Machine-readable results behind the figures (JSON, CSV, Markdown)."""
    return layout.analysis_dir(results_dir(config))


def figure_files(config: dict, number: int) -> list[Path]:
    return layout.figure_files(results_dir(config), FIGURE_STEMS[number])


def has_cell(config: dict, cell: Cell) -> bool:
    """Whether ``cell`` (a row) is one of the config's table cells."""
    return cell in cells(config)


def representation_students(config: dict) -> dict[str, dict[str, Cell]]:
    """Figure 3's students per same-vocabulary pair: {pair: {"SFT": cell, "KD": cell, "DSKD": cell}}, for every
    pair that has KD and DSKD cells with ``figures.representation.divergence`` and a student SFT row (its own or
    a borrowed one, see ``sft_cell``). KD and DSKD exist only where teacher and student share a vocabulary."""
    divergence = figure_settings(config, "representation")["divergence"]
    out = {}
    for pair in config["pairs"]:
        kd, dskd, sft = Cell(pair, "kd", divergence=divergence), Cell(pair, "dskd", divergence=divergence), \
            sft_cell(config, pair)
        if sft is not None and has_cell(config, kd) and has_cell(config, dskd):
            out[pair] = {"SFT": sft, "KD": kd, "DSKD": dskd}
    return out


def judge_comparisons(config: dict) -> list[tuple[Cell, Cell]]:
    """Figure 2's comparisons: (DSKD cell, KD cell) with the same pair and divergence, for every such pair of
    cells in the config (PAPER.md section 4)."""
    out = []
    for pair in config["pairs"]:
        for d in config["divergences"]:
            kd, dskd = Cell(pair, "kd", divergence=d), Cell(pair, "dskd", divergence=d)
            if has_cell(config, kd) and has_cell(config, dskd):
                out.append((dskd, kd))
    return out


def figure_numbers(config: dict) -> list[int]:
    """The figures this config draws: Figure 1 always; Figure 2 with KD and DSKD cells of the same pair and
    divergence; Figure 3 with those and a student SFT row (a config of cross-vocabulary methods only has neither)."""
    return [1] + ([2] if judge_comparisons(config) else []) + ([3] if representation_students(config) else [])


def claims_figure_files(config: dict) -> list[Path]:
    """The forest plot of the paper's claims (``repro.figures.plot_claims``), PNG and PDF."""
    return layout.figure_files(results_dir(config), "claims")


def difference_tables(config: dict) -> list[int]:
    """The tables with KD w/ DSKD and KD rows of the same pair and divergence (Tables 1-2 of the paper), each drawn
    as a plot of their differences (``repro.figures.plot_table_differences``)."""
    return sorted({config["pairs"][dskd.pair]["table"] for dskd, _ in judge_comparisons(config)})


def difference_figure_files(config: dict, table: int) -> list[Path]:
    return layout.figure_files(results_dir(config), f"table{table}_dskd_minus_kd")


def claims_plot_files(config: dict) -> list[Path]:
    """Every file the claims' plotting step writes: the forest plot, then each difference plot."""
    return claims_figure_files(config) + [path for n in difference_tables(config)
                                          for path in difference_figure_files(config, n)]


def training_curve_file(config: dict, cell: Cell) -> Path:
    """The training curves of row ``cell``, every training run of it in one PNG."""
    return layout.training_curve_file(results_dir(config), _folder_name(cell.pair, f"pairs.{cell.pair}"), cell.name)


def report_file(config: dict) -> Path:
    return layout.report_file(results_dir(config))
