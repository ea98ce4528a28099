"""The project's names and their traits, in one torch-free table: methods, divergences and test sets.

Everything that asks what a method is (does it read a teacher, run once per divergence, need a shared vocabulary,
read only the teacher's text; its title in the tables) reads it here: the config checks
(``repro.config``), the grid and its titles (``repro.grid``), the method classes' flags (``repro.methods``, whose
``METHODS`` registry is built from ``METHODS`` below) and their error messages. ``config/schema.yaml`` spells the
same names as enums for its validator; a test keeps them equal to this table.

Adding a method: its class in ``repro.methods`` and one entry here (``implementation`` names the class).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A training objective of the tables' rows.

    ``needs_teacher``: reads a teacher (its states, or its text when ``black_box``). ``needs_divergence``: one row per
    divergence of the config. ``cross_vocab``: reads batches tokenised by both models (teacher and student may have
    different vocabularies). ``black_box``: reads only the teacher's generated text (any vocabulary).
    ``teacher_embeddings``: reads the teacher's input embeddings (DSKD-CMA's keys and values), so a cell that reads
    the teacher-state cache loads them with the output head (``repro.models.load_teacher_parts``).
    ``ablation_title``: its row title in Table 3, where it is one of the ablation's rows. ``implementation``: its class
    in ``repro.methods``, and the arguments the class is built with."""
    title: str
    implementation: str
    needs_teacher: bool = False
    needs_divergence: bool = False
    cross_vocab: bool = False
    black_box: bool = False
    teacher_embeddings: bool = False
    ablation_title: str | None = None
    options: tuple = ()

    @property
    def same_vocab(self) -> bool:
        """Compares the teacher's and student's logits token by token, so both must share a vocabulary."""
        return self.needs_teacher and not self.cross_vocab and not self.black_box


METHODS = {
    "sft": Method("SFT", "SFT"),
    "seqkd": Method("SeqKD", "SeqKD", needs_teacher=True, black_box=True),
    "kd": Method("KD", "VanillaKD", needs_teacher=True, needs_divergence=True,
                 ablation_title="Different spaces (KD)"),
    "dskd": Method("KD w/ DSKD", "DSKD", needs_teacher=True, needs_divergence=True,
                   ablation_title="Dual space (DSKD)"),
    "dskd_student_space": Method("DSKD, student space only", "DSKD", needs_teacher=True, needs_divergence=True,
                                 ablation_title="Student space only", options=(("student_space_only", True),)),
    "uld": Method("ULD", "ULD", needs_teacher=True, cross_vocab=True),
    "mined": Method("MinED", "MinED", needs_teacher=True, cross_vocab=True),
    "dskd_cma": Method("DSKD-CMA", "DSKDCrossModelAttention", needs_teacher=True, needs_divergence=True,
                       cross_vocab=True, teacher_embeddings=True),
}

# Methods a pair with two vocabularies can use among the distillation rows.
CROSS_VOCAB_METHODS = tuple(name for name, m in METHODS.items() if m.cross_vocab or m.black_box)
# The rows of Table 3, the ablation (PAPER.md section 5), in its order: different spaces, student space only, dual.
ABLATION_METHODS = ("kd", "dskd_student_space", "dskd")

# The divergences of the KD rows (``repro.losses.DIVERGENCES`` implements each) and their titles.
DIVERGENCE_TITLES = {"kl": "KL", "rkl": "RKL", "js": "JS", "skl": "SKL", "srkl": "SRKL", "akl": "AKL", "tvd": "TVD"}
DIVERGENCES = tuple(DIVERGENCE_TITLES)

# The five test sets of the tables (PAPER.md section 4), in the tables' order, and their titles.
TEST_SET_TITLES = {"dolly": "Dolly", "selfinst": "SelfInst", "vicuna": "VicunaEval", "sni": "S-NI", "unni": "UnNI"}
TEST_SETS = tuple(TEST_SET_TITLES)


def method(name: str) -> Method:
    """The traits of method ``name``; an unknown name is named with the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}") from None


def names_list(names) -> str:
    """``a, b, c or d``: names for an error message."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# Options where the project can follow the official code or another choice (README "Fidelity"); the first of each
# is the default and reproduces the official code.
CHOICES = {
    "dskd_s2t_divergence": ("kl", "row"),
    "cma_normalisation": ("official", "response"),
    "mined_alignment": ("input", "label"),
    "mined_target": ("first", "sum"),
    "mined_vocab_map": ("convert", "strip"),
    "teacher_padded_rows": ("keep", "cut"),
}
