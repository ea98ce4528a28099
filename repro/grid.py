"""The experiment grid: which table cells a config asks for, where their files live, what each job is given.

No torch import: the Snakefile calls this while building the DAG, which must stay instant.

A cell is one table row of one pair: the teacher row (``{pair}/teacher``, SFT of the teacher), the student SFT row
(``{pair}/sft``) and one row per KD method and divergence (``{pair}/kd-kl``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import DIVERGENCE_METHODS

TEST_SETS = ("dolly", "selfinst", "vicuna", "sni", "unni")
TEST_SET_TITLES = {"dolly": "Dolly", "selfinst": "SelfInst", "vicuna": "VicunaEval", "sni": "S-NI", "unni": "UnNI"}
METHOD_TITLES = {"sft": "SFT", "seqkd": "SeqKD", "kd": "KD", "dskd": "KD w/ DSKD",
                 "dskd_student_space": "DSKD, student space only", "uld": "ULD", "mined": "MinED",
                 "dskd_cma": "DSKD-CMA"}
DIVERGENCE_TITLES = {"kl": "KL", "rkl": "RKL", "js": "JS", "skl": "SKL", "srkl": "SRKL", "akl": "AKL", "tvd": "TVD"}


@dataclass(frozen=True)
class Cell:
    pair: str
    method: str
    role: str = "student"
    divergence: str | None = None

    @property
    def name(self) -> str:
        if self.role == "teacher":
            return "teacher"
        return f"{self.method}-{self.divergence}" if self.divergence else self.method

    @property
    def id(self) -> str:
        return f"{self.pair}/{self.name}"

    @property
    def title(self) -> str:
        """Row label in the tables."""
        if self.role == "teacher":
            return "Teacher (SFT)"
        title = METHOD_TITLES.get(self.method, self.method)
        return f"{title} ({DIVERGENCE_TITLES.get(self.divergence, self.divergence)})" if self.divergence else title

    @property
    def needs_teacher(self) -> bool:
        return self.role == "student" and self.method != "sft"


def cells(config: dict) -> list[Cell]:
    """Every table cell of ``config``, teacher rows first within each pair."""
    out = []
    for pair, spec in config["pairs"].items():
        out.append(Cell(pair, "sft", role="teacher"))
        for method in spec.get("methods", config["methods"]):
            if method in DIVERGENCE_METHODS:
                out += [Cell(pair, method, divergence=d) for d in config["divergences"]]
            else:
                out.append(Cell(pair, method))
    return out


def find_cell(config: dict, pair: str, name: str) -> Cell:
    for cell in cells(config):
        if cell.pair == pair and cell.name == name:
            return cell
    raise KeyError(f"no cell {pair}/{name} in this configuration")


def results_dir(config: dict) -> Path:
    return Path(config["results_dir"])


def data_dir(config: dict) -> Path:
    return results_dir(config) / "data"


def data_files(config: dict) -> list[Path]:
    d = data_dir(config)
    return [d / "train.jsonl", d / "dev.jsonl"] + [d / "test" / f"{t}.jsonl" for t in TEST_SETS]


def tokenizer_dir(config: dict, name: str) -> Path:
    return results_dir(config) / "tokenizers" / name


def base_model_dir(config: dict, name: str) -> Path:
    return results_dir(config) / "models" / "base" / name


def built_models(config: dict) -> list[str]:
    """Models the workflow builds itself (config entries with ``arch``), as opposed to hub ids."""
    return [name for name, spec in config["models"].items() if "arch" in spec]


def model_source(config: dict, name: str) -> str:
    """Where to load model ``name`` from: its hub id / path, or the folder the workflow saves it in."""
    spec = config["models"][name]
    return spec["id"] if "id" in spec else str(base_model_dir(config, name))


def run_dir(config: dict, cell: Cell) -> Path:
    return results_dir(config) / "runs" / cell.pair / cell.name


def scores_file(config: dict, cell: Cell) -> Path:
    return run_dir(config, cell) / "scores.json"


def checkpoint_dir(config: dict, cell: Cell) -> Path:
    return run_dir(config, cell) / "model"


def teacher_cell(cell: Cell) -> Cell:
    return Cell(cell.pair, "sft", role="teacher")


def tables(config: dict) -> list[int]:
    return sorted({pair["table"] for pair in config["pairs"].values()})


def table_files(config: dict) -> list[Path]:
    d = results_dir(config) / "tables"
    return [d / f"table{n}.{ext}" for n in tables(config) for ext in ("md", "csv")]


def cell_params(config: dict, cell: Cell, threads: int = 1) -> dict:
    """The papermill parameters of one cell's notebook (plain YAML-able values; no secrets)."""
    pair = config["pairs"][cell.pair]
    model_key = pair[cell.role]
    training = dict(config["training"])
    training.update(pair[f"{cell.role}_training"])
    evaluation = dict(config["evaluation"])
    training["dev_seeds"] = evaluation.pop("dev_seeds")
    return {
        "cell_id": cell.id,
        "pair": cell.pair,
        "method": cell.method,
        "role": cell.role,
        "divergence": cell.divergence or "",
        "model": model_source(config, model_key),
        "teacher": str(checkpoint_dir(config, teacher_cell(cell))) if cell.needs_teacher else "",
        "data_dir": str(data_dir(config)),
        "out_dir": str(run_dir(config, cell)),
        "training": training,
        "evaluation": evaluation,
        "threads": threads,
    }
