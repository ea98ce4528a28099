"""The toy simulation of Figure 1 (PAPER.md section 2, "Toy simulation").

A fixed teacher (hidden states ~ 2 N(0, 1), its own random head) and a student whose hidden states (~ N(0, 1) + 3)
and head are trained by plain SGD to match the teacher's distributions over ``n_classes`` classes, in two settings
that start from the same student initialisation:

- ``different``: teacher logits come from the teacher's own head (vanilla KD, two output spaces);
- ``shared``: teacher logits come from the student's head, detached on the teacher side (one output space, DSKD).

Repetitions run side by side as a batch (independent problems: the loss is the sum of each repetition's mean over
its vectors, so each repetition's gradient is its own). No temperature; logits are hidden states times head.
"""
from __future__ import annotations

from dataclasses import asdict

from .settings import ToySettings

SETTINGS = ("different", "shared")


def initial_state(settings: ToySettings, repetitions: int, generator):
    """Random teacher and student of ``repetitions`` independent problems.

    Returns a dict of tensors: ``teacher_hidden`` [R, N, d] ~ 2 N(0,1), ``teacher_head`` [R, d, C] ~ N(0,1),
    ``student_hidden`` [R, N, d] ~ N(0,1) + 3, ``student_head`` [R, d, C] ~ N(0,1).
    """
    import torch

    r, n, d, c = repetitions, settings.n_vectors, settings.dim, settings.n_classes
    return {
        "teacher_hidden": settings.teacher_scale * torch.randn(r, n, d, generator=generator),
        "teacher_head": torch.randn(r, d, c, generator=generator),
        "student_hidden": torch.randn(r, n, d, generator=generator) + settings.student_shift,
        "student_head": torch.randn(r, d, c, generator=generator),
    }


def simulate(state: dict, divergence: str, settings: ToySettings) -> dict:
    """Train the student of ``state`` (see ``initial_state``) with SGD on ``divergence``, in both settings at once.

    The two settings train separate copies of the student (same initialisation); their logits are stacked so that
    one divergence call serves both (the repetitions are independent, so this changes no value). Returns, per
    setting in ``SETTINGS``: ``losses`` [steps + 1, R] (every repetition's loss before each step and after the
    last one), ``best_hidden`` [R, N, d] (the student's hidden states at its lowest loss), ``best_loss`` [R] and
    ``best_step`` [R]. The input ``state`` is not modified.
    """
    import torch

    from .losses import get_divergence

    divergence_fn = get_divergence(divergence)
    reps = state["student_hidden"].shape[0]
    params = {s: (state["student_hidden"].clone().requires_grad_(True),
                  state["student_head"].clone().requires_grad_(True)) for s in SETTINGS}
    teacher_hidden = state["teacher_hidden"]
    own_head_logits = torch.bmm(teacher_hidden, state["teacher_head"])  # setting "different": fixed
    optimizer = torch.optim.SGD([p for pair in params.values() for p in pair], lr=settings.lr)
    losses = []
    best_loss = torch.full((2 * reps,), float("inf"))
    best_step = torch.zeros(2 * reps, dtype=torch.long)
    best_hidden = torch.cat([params[s][0].detach() for s in SETTINGS]).clone()
    for step in range(settings.steps + 1):
        hidden = torch.cat([params[s][0] for s in SETTINGS])
        student_logits = torch.cat([torch.bmm(*params[s]) for s in SETTINGS])
        shared_head_logits = torch.bmm(teacher_hidden, params["shared"][1].detach())
        teacher_logits = torch.cat([own_head_logits, shared_head_logits])
        per_rep = divergence_fn(student_logits, teacher_logits).mean(dim=1)  # [2R]: mean over the vectors
        values = per_rep.detach()
        losses.append(values)
        better = values < best_loss
        best_loss = torch.where(better, values, best_loss)
        best_step = torch.where(better, torch.full_like(best_step, step), best_step)
        best_hidden[better] = hidden.detach()[better]
        if step == settings.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        per_rep.sum().backward()
        optimizer.step()
    losses = torch.stack(losses)
    return {s: {"losses": losses[:, i * reps:(i + 1) * reps], "best_hidden": best_hidden[i * reps:(i + 1) * reps],
                "best_loss": best_loss[i * reps:(i + 1) * reps], "best_step": best_step[i * reps:(i + 1) * reps]}
            for i, s in enumerate(SETTINGS)}


def distance(student_hidden, teacher_hidden):
    """Mean Euclidean distance between each student hidden state and the teacher's of the same index.

    ``student_hidden``, ``teacher_hidden``: [R, N, d]. Returns [R].
    """
    return (student_hidden - teacher_hidden).norm(dim=-1).mean(dim=-1)


def run_toy(divergences: list[str], settings: ToySettings, progress: bool = True) -> dict:
    """Figure 1's simulation for every divergence in both settings, ``settings.repetitions`` times.

    Every divergence and setting sees the same random problems (repetition ``i`` uses the same teacher and
    student initialisation everywhere). Returns a JSON-ready dict: the settings; per divergence and setting the
    mean and std over repetitions of the loss at every step, the final (lowest) loss and teacher-student distance
    (mean and std), and the first repetition's hidden states before and after, for the scatter plots.
    """
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(settings.threads)
    generator = torch.Generator().manual_seed(settings.seed)
    chunks = []
    left = settings.repetitions
    while left > 0:
        chunks.append(min(settings.chunk, left))
        left -= chunks[-1]
    states = [initial_state(settings, size, generator) for size in chunks]
    results: dict = {"settings": asdict(settings), "divergences": {}}
    bar = tqdm(total=len(divergences) * len(chunks), desc="toy simulation", disable=not progress)
    for name in divergences:
        both = []
        for state in states:
            both.append(simulate(state, name, settings))
            bar.update()
        per_setting = {}
        for setting in SETTINGS:
            runs = [b[setting] for b in both]
            losses = torch.cat([r["losses"] for r in runs], dim=1)          # [steps + 1, R]
            best_hidden = torch.cat([r["best_hidden"] for r in runs])      # [R, N, d]
            teacher = torch.cat([s["teacher_hidden"] for s in states])
            start = torch.cat([s["student_hidden"] for s in states])
            dist = distance(best_hidden, teacher)
            start_dist = distance(start, teacher)
            best_loss = torch.cat([r["best_loss"] for r in runs])
            per_setting[setting] = {
                "loss_mean": losses.mean(dim=1).tolist(),
                "loss_std": losses.std(dim=1, unbiased=False).tolist(),
                "best_loss": _mean_std(best_loss),
                "best_step": _mean_std(torch.cat([r["best_step"] for r in runs]).float()),
                "distance_before": _mean_std(start_dist),
                "distance_after": _mean_std(dist),
                "distance_after_runs": dist.tolist(),  # per repetition (the same problems in both settings)
                "example": {"teacher": teacher[0].tolist(), "student_before": start[0].tolist(),
                            "student_after": best_hidden[0].tolist()},
            }
        results["divergences"][name] = per_setting
    bar.close()
    return results


def _mean_std(values) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std(unbiased=False))}


def distance_rows(results: dict) -> list[dict]:
    """One row per divergence of the final teacher-student distance and lowest loss in both settings."""
    rows = []
    for name, per_setting in results["divergences"].items():
        row = {"divergence": name}
        for setting in SETTINGS:
            entry = per_setting[setting]
            row[f"{setting}_distance"] = entry["distance_after"]["mean"]
            row[f"{setting}_distance_std"] = entry["distance_after"]["std"]
            row[f"{setting}_loss"] = entry["best_loss"]["mean"]
        row["distance_before"] = per_setting[SETTINGS[0]]["distance_before"]["mean"]
        rows.append(row)
    return rows
