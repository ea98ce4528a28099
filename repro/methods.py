"""Training objectives of the table rows, one registry keyed by the labels the tables print (PAPER.md section 2).

A method turns a batch into token-SUMMED loss terms; the trainer divides them by the number of response tokens of
the whole global batch (the official normalisation). ``loss`` is the term that is back-propagated; the other
entries are logged (token sums too, so that after the division a count of correct tokens becomes an accuracy).
A method may own trainable modules (the DSKD projectors): ``build`` creates them, the trainer optimises them in
their own parameter group (``projector_lr``) and hands them back through ``Context.modules``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import names
from .alignment import align_examples, first_teacher_ids, token_strings, vocab_mapping
from .data import IGNORE
from .lean import (
    LEAN,
    FrozenHead,
    LazyLogits,
    cross_entropy_sum,
    head_cross_entropy_sum,
    head_divergence,
    weighted_ce_and_divergence,
)
from .losses import get_divergence
from .names import CHOICES
from .settings import TrainSettings


@dataclass
class Context:
    """What a method needs besides the batch: the run's ``settings`` (``repro.settings.TrainSettings``, whose KD rate
    and temperature, ``max_length``, divergence options and fidelity choices below the methods read through this
    context; ``repro.training.build_context`` builds it), the student's vocabulary, the divergence, the teacher.

    ``n_vocab``: number of real token ids; logits beyond it (padded embedding rows, as in Qwen1.5) are cut off.
    ``modules``: the method's trainable modules made by ``build`` (``None`` for methods without any).
    ``dskd_s2t_divergence``: ``"kl"`` (the official v1 code: the teacher-space term is always forward KL) or
    ``"row"`` (DSKDv2: the row's divergence).
    ``teacher_tokenizer``, ``teacher_n_vocab``: the teacher's own tokenizer and number of real token ids, for the
    cross-vocabulary methods (batches then also carry ``teacher_*`` tensors in the teacher's tokenisation).
    ``cma_normalisation``: DSKD-CMA's three global standard deviations, ``"official"`` (over every position of the
    global batch as if each sequence were padded to ``max_length``, as the official code's tensors are) or
    ``"response"`` (over the response positions of the global batch only).
    ``mined_alignment``: MinED aligns the ``"input"`` tokens at response positions and keeps a pair only where the
    ids agree through the map (the official code), or the ``"label"`` tokens without that check.
    ``mined_target``: MinED's teacher target in the student vocabulary, ``"first"`` (each student id takes the logit
    of the first teacher id mapped to it, the official code) or ``"sum"`` (the probabilities of every teacher id
    mapped to it add up).
    ``mined_vocab_map``: how MinED's vocabulary map compares token strings, ``"convert"`` (FuseLLM's, which the
    official code uses: the teacher's space mark replaced by the student's) or ``"strip"`` (no space marks at all).
    ``teacher_padded_rows``: a teacher's head rows beyond its tokenizer (Qwen1.5), ``"keep"`` in ULD and in CMA's
    teacher-space term (the official code) or ``"cut"`` there too. Same-vocabulary methods always cut both sides
    to the shared tokenizer.
    ``teacher_states``: the teacher-state cache (``repro.teacher_states.TeacherStates``): when set, the teacher's
    final hidden states at response positions are read from it instead of running the teacher's body (the head and
    the embeddings still come from ``teacher``, which a cached cell loads as ``repro.models.TeacherParts``: those
    alone); batches then carry ``example_index``.
    ``cma_scales`` (set by ``DSKDCrossModelAttention.begin_step``), ``vocab_map``, ``first_ids`` and
    ``aligned_share`` (set by ``MinED.prepare``) are state of the methods.
    """
    n_vocab: int
    settings: TrainSettings
    divergence: str | None = None
    teacher: torch.nn.Module | None = None
    modules: torch.nn.Module | None = None
    teacher_tokenizer: object = None
    teacher_n_vocab: int | None = None
    teacher_states: object = None
    cma_scales: torch.Tensor | None = None
    vocab_map: torch.Tensor | None = None
    first_ids: torch.Tensor | None = None
    aligned_share: float | None = None

    # What a method reads of the run's settings, straight from them (TrainSettings owns every value and default).
    SETTINGS_READ = ("kd_rate", "kd_temperature", "max_length", "dskd_s2t_divergence", *CHOICES)

    def __getattr__(self, name: str):
        if name in Context.SETTINGS_READ:
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in Context.SETTINGS_READ:  # one owner: a context never holds a setting of its own
            raise AttributeError(f"Context.{name} is the run's setting: build the context from TrainSettings with "
                                 f"{name}={value!r} instead")
        super().__setattr__(name, value)

    @property
    def divergence_options(self) -> dict:
        return self.settings.divergence_options()

    def teacher_rows(self) -> int:
        """How many rows of the teacher's head its distributions span in ULD and CMA's teacher-space term: all of
        them (``teacher_padded_rows: keep``, the official code, Qwen1.5's padded rows included) or the tokenizer's
        ids (``cut``)."""
        if self.teacher_padded_rows == "keep":
            return self.teacher.get_output_embeddings().weight.shape[0]
        return self.teacher_n_vocab

    def divergence_fn(self):
        """The row's divergence with its options bound (e.g. ``skew`` for ``skl``), in its lean form
        (``repro.lean``: the registry's values and gradients with bounded memory)."""
        get_divergence(self.divergence)  # an unknown name is named here
        fn = LEAN[self.divergence]
        options = self.divergence_options.get(self.divergence, {})
        return lambda s, t, tau: fn(s, t, tau, **options)

    def weighted_ce_and_divergence(self, z_s: torch.Tensor, y: torch.Tensor, z_t) -> tuple[torch.Tensor,
                                                                                           torch.Tensor, torch.Tensor]:
        """``(1 - kd_rate) * CE(z_s, y) + kd_rate * sum_m D(z_s, z_t)`` with its graph, and the detached CE and
        divergence sums, in one pass over the student's logits with one gradient buffer
        (``repro.lean.weighted_ce_and_divergence``: the same values and gradients as the separate terms)."""
        get_divergence(self.divergence)
        options = self.divergence_options.get(self.divergence, {})
        return weighted_ce_and_divergence(self.divergence, z_s, y, z_t, self.kd_temperature, 1 - self.kd_rate,
                                          self.kd_rate, **options)


def _logits(model, batch: dict, n_vocab: int) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits[..., :n_vocab]


def hidden_size(model) -> int:
    """Width of the hidden states that ``model``'s output head reads (any causal LM)."""
    return model.get_output_embeddings().weight.shape[1]


def final_hidden(model, batch: dict) -> torch.Tensor:
    """The last hidden states [B,L,d] as the output head reads them (after the final norm), without running the
    head: the model's decoder (``base_model``, a generic Hugging Face property; through a peft wrapper too)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return core.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state


def response_outputs(model, batch: dict, n_vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gold tokens [N], logits [N,n_vocab] and hidden states [N,d] at the N response positions of ``batch``.

    Every loss term is a sum over response positions (PAPER.md section 2), so the output head (and the softmax
    after it) runs there only: the same values as slicing the full logits, at a fraction of the cost when prompts
    are most of a sequence or the vocabulary is large.
    """
    hidden = final_hidden(model, batch)
    y, h = response_rows(batch["labels"], hidden)
    return y, head_logits(h, model, n_vocab, detach_head=False), h


def head_logits(hidden: torch.Tensor, model, n_vocab: int, detach_head: bool) -> torch.Tensor:
    """Apply ``model``'s output head (weight [V,d], optional bias) to ``hidden`` [...,d] -> [...,n_vocab].

    ``detach_head``: the head takes no gradient (the student head in the student-space projection). Padded rows
    beyond ``n_vocab`` are left out.
    """
    return frozen_head(model, n_vocab, detach=detach_head)(hidden)


def frozen_head(model, n_vocab: int, detach: bool = True) -> FrozenHead:
    """``model``'s output head restricted to ``n_vocab`` rows (``repro.lean.FrozenHead``), detached: the head of a
    projection whose gradient flows to the projected states only (``detach`` False: the head itself, with its
    gradient)."""
    head = model.get_output_embeddings()
    weight = head.weight[:n_vocab]
    bias = head.bias[:n_vocab] if getattr(head, "bias", None) is not None else None
    if detach:
        weight, bias = weight.detach(), bias.detach() if bias is not None else None
    return FrozenHead(weight, bias)


def response_rows(labels: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """The response positions (label not IGNORE) of ``labels`` [B,L] and of each tensor [B,L,...] -> [N] and
    [N,...]. Every KD term is a sum over these positions only (PAPER.md section 2), so computing projections, heads
    and divergences there alone gives the same values at a fraction of the cost (prompt and padding positions are
    most of a batch)."""
    mask = labels != IGNORE
    return [labels[mask]] + [t[mask] for t in tensors]


def teacher_hidden_rows(ctx: Context, teacher_batch: dict) -> torch.Tensor:
    """The teacher's final hidden states [N_t,d_t] at the response positions of ``teacher_batch`` (batch-major,
    positions ascending, as ``response_rows`` orders them), without gradient: read from the teacher-state cache
    (``ctx.teacher_states``, by the batch's ``example_index``) or computed by the live teacher."""
    with torch.no_grad():
        if ctx.teacher_states is not None:
            if "example_index" not in teacher_batch:
                raise ValueError("the teacher-state cache needs batches with example_index (repro.data.collate of "
                                 "encoded training examples)")
            rows = ctx.teacher_states.rows(teacher_batch["example_index"].tolist())
            expected = int((teacher_batch["labels"] != IGNORE).sum())
            if rows.shape[0] != expected:
                raise ValueError(f"teacher-state cache: {rows.shape[0]} cached response positions for this batch, "
                                 f"the batch has {expected}; the cache was built from other data or tokenisation")
            device = teacher_batch["labels"].device
            return rows.to(device)
        return final_hidden(ctx.teacher, teacher_batch)[teacher_batch["labels"] != IGNORE]


def teacher_logits(ctx: Context, hidden: torch.Tensor) -> LazyLogits:
    """The frozen teacher's logits [N, n_vocab] at ``hidden`` [N, d_t], as ``repro.lean.LazyLogits``: a lean loss
    computes them a block of rows at a time (the same values; no [N, V] tensor at once)."""
    return LazyLogits(hidden, frozen_head(ctx.teacher, ctx.n_vocab), ctx.n_vocab)


def _project(projector: torch.nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    return projector(hidden.to(projector.weight.dtype))


def total_loss(ctx: Context, ce: torch.Tensor, kd: torch.Tensor, **logged: torch.Tensor) -> dict[str, torch.Tensor]:
    """The objective of every KD row, ``(1 - kd_rate) * CE + kd_rate * KD`` (PAPER.md section 2), with CE, KD and
    the ``logged`` terms detached for the log."""
    loss = (1 - ctx.kd_rate) * ce + ctx.kd_rate * kd
    return {"loss": loss, "ce": ce.detach(), "kd": kd.detach(), **{k: v.detach() for k, v in logged.items()}}


class SFT:
    """Supervised fine-tuning: token cross-entropy on the response (the "SFT" rows and the teacher row).

    Every method is built with its registry name; its flags come from ``repro.names.METHODS`` (``needs_teacher``,
    ``needs_divergence``, ``black_box``: the teacher's generated text only, any vocabulary; ``cross_vocab``: batches
    tokenised by both models, ``teacher_*`` tensors; ``teacher_embeddings``: reads the teacher's input embeddings
    besides its head when its hidden states come from the teacher-state cache)."""

    def __init__(self, name: str = "sft"):
        traits = names.method(name)
        self.name = name
        self.needs_teacher, self.needs_divergence = traits.needs_teacher, traits.needs_divergence
        self.black_box, self.cross_vocab = traits.black_box, traits.cross_vocab
        self.teacher_embeddings = traits.teacher_embeddings

    def build(self, student, teacher) -> torch.nn.Module | None:
        return None

    def prepare(self, encoded: list, tokenizer, ctx: Context) -> None:
        """Annotate the encoded training set once before training (MinED's alignments, DSKD-CMA's statistics);
        nothing by default."""

    def begin_step(self, items: list, ctx: Context) -> None:
        """Called with the whole global batch (every process's share) before its micro batches: what a method
        needs from the global batch (DSKD-CMA's normalisation), so that a step does not depend on how the batch is
        split into micro batches or processes. Nothing by default."""

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        y, z_s, _ = response_outputs(student, batch, ctx.n_vocab)
        ce = cross_entropy_sum(z_s[None], y[None])
        return {"loss": ce, "ce": ce.detach()}


class VanillaKD(SFT):
    """Vanilla white-box KD (the "KD" rows): ``(1 - a) CE + a * sum_m D(z_s, z_t)``, teacher detached."""

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        if ctx.teacher is None:
            raise ValueError("method 'kd' needs a teacher model")
        y, z_s, _ = response_outputs(student, batch, ctx.n_vocab)
        z_t = teacher_logits(ctx, teacher_hidden_rows(ctx, batch))  # computed in blocks where the loss reads it
        loss, ce, kd = ctx.weighted_ce_and_divergence(z_s, y, z_t)  # (1 - a) CE + a KD in one pass
        return {"loss": loss, "ce": ce, "kd": kd}


class DSKD(SFT):
    """Dual-space KD for a shared vocabulary (the "w/ DSKD" rows; PAPER.md section 2).

    Student space: ``z_t2s = P_t2s(h_t) W_s^T`` (student head detached); ``t2s_ce = CE(z_t2s, y)`` trains
    ``P_t2s``; ``t2s_kd = sum_m D(z_s, z_t2s.detach())``. Teacher space: ``z_s2t = P_s2t(h_s) W_t^T`` (teacher head
    frozen); ``s2t_kd = sum_m KL(p_t || p_s2t)`` (or the row's divergence, ``Context.dskd_s2t_divergence``).
    ``KD = t2s_kd + t2s_ce + s2t_kd``; ``student_space_only`` drops ``s2t_kd`` (Table 3 ablation).
    """

    def __init__(self, name: str = "dskd", student_space_only: bool = False):
        super().__init__(name)
        self.student_space_only = student_space_only

    def build(self, student, teacher) -> torch.nn.Module:
        """The projectors: plain linear layers with bias and default init (``t2s``: d_t -> d_s, ``s2t``: d_s -> d_t)."""
        d_s, d_t = hidden_size(student), hidden_size(teacher)
        projectors = {"t2s": torch.nn.Linear(d_t, d_s)}
        if not self.student_space_only:
            projectors["s2t"] = torch.nn.Linear(d_s, d_t)
        return torch.nn.ModuleDict(projectors).to(student.device)

    def terms(self, student, batch: dict, ctx: Context, fused: bool = False) -> dict[str, torch.Tensor]:
        """Every loss term with its graph (token sums): ``ce``, ``t2s_ce``, ``t2s_kd``, ``s2t_kd``; and ``t2s_acc``,
        the count of response tokens that the projected teacher predicts right (the trainer's division by the
        response tokens turns it into the projector's accuracy). ``fused``: ``ce`` and ``t2s_kd`` come detached,
        and ``student_space`` = ``(1 - a) ce + a t2s_kd`` carries their graph (one pass over the student's logits,
        one gradient buffer; ``loss`` uses it).

        Memory: the projected logits go through the frozen heads in ``repro.lean`` (``head_cross_entropy_sum``,
        ``head_divergence``), so of the vocabulary-sized tensors only the student's logits, their gradient and the
        detached ``z_t2s`` exist whole."""
        if ctx.teacher is None or ctx.modules is None:
            raise ValueError("method 'dskd' needs a teacher model and its projectors (Method.build)")
        y, z_s, h_s = response_outputs(student, batch, ctx.n_vocab)  # [N], [N,V], [N,d_s]
        h_t = teacher_hidden_rows(ctx, batch)  # [N,d_t]
        x_t2s = _project(ctx.modules["t2s"], h_t)  # [N,d_s]
        student_head = frozen_head(student, ctx.n_vocab)
        with torch.no_grad():
            z_t2s = student_head(x_t2s)  # [N,V], the student-space teacher (detached)
        t2s_ce, t2s_hits = head_cross_entropy_sum(x_t2s, student_head, y, logits=z_t2s)
        out = {"t2s_ce": t2s_ce, "t2s_acc": t2s_hits}
        if fused:
            out["student_space"], out["ce"], out["t2s_kd"] = ctx.weighted_ce_and_divergence(z_s, y, z_t2s)
        else:
            out["ce"] = cross_entropy_sum(z_s, y)
            out["t2s_kd"] = ctx.divergence_fn()(z_s, z_t2s, ctx.kd_temperature).sum()
        if not self.student_space_only:
            z_t = teacher_logits(ctx, h_t)  # [N,V], computed in blocks where the loss reads it
            s2t = "kl" if ctx.dskd_s2t_divergence == "kl" else ctx.divergence
            options = {} if s2t == "kl" else ctx.divergence_options.get(s2t, {})
            out["s2t_kd"] = head_divergence(s2t, _project(ctx.modules["s2t"], h_s),
                                            frozen_head(ctx.teacher, ctx.n_vocab), z_t, ctx.kd_temperature,
                                            **options).sum()
        return out

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        terms = self.terms(student, batch, ctx, fused=True)
        rest = terms["t2s_ce"] + terms.get("s2t_kd", 0.0)  # (the KD terms outside the student-space pass)
        loss = terms.pop("student_space") + ctx.kd_rate * rest
        kd = terms["t2s_kd"] + rest.detach()
        return {"loss": loss, "ce": terms.pop("ce"), "kd": kd, **{k: v.detach() for k, v in terms.items()}}


class SeqKD(SFT):
    """Sequence-level KD (black box): SFT on the teacher's own responses to the training prompts
    (PAPER.md section 2). The trainer's caller replaces the training targets (``repro.cells.train_cell``)."""


def _teacher_batch(batch: dict) -> dict:
    """The teacher-tokenised view of a cross-vocabulary batch, under the usual key names."""
    out = {"input_ids": batch["teacher_input_ids"], "attention_mask": batch["teacher_attention_mask"],
           "labels": batch["teacher_labels"]}
    if "example_index" in batch:
        out["example_index"] = batch["example_index"]
    return out


def _require_cross_vocab(name: str, batch: dict, ctx: Context) -> None:
    if ctx.teacher is None or ctx.teacher_n_vocab is None or "teacher_input_ids" not in batch:
        raise ValueError(f"method {name!r} needs a teacher, its vocabulary size and batches tokenised by both "
                         f"models (teacher_* tensors)")


def uld_distance_sum(z_s: torch.Tensor, labels: torch.Tensor, z_t: torch.Tensor,
                     teacher_labels: torch.Tensor) -> torch.Tensor:
    """Universal Logit Distillation (Boizard et al. 2024; PAPER.md section 2), summed over aligned positions.

    Shapes: ``z_s`` [B,L,V_s], ``labels`` [B,L], ``z_t`` [B,T,V_t], ``teacher_labels`` [B,T]. Per sequence the
    response positions of both sides are paired by index from the first response token (the shorter side sets the
    count); each distribution is a softmax WITHOUT temperature, sorted in decreasing order, the smaller vocabulary
    padded with zeros; the distance is ``sum_v |p_s_sorted - p_t_sorted|``. See ``uld_rows_sum`` for the same on
    response rows.
    """
    s_mask, t_mask = labels != IGNORE, teacher_labels != IGNORE
    return uld_rows_sum(z_s[s_mask], s_mask.sum(1).tolist(), z_t[t_mask], t_mask.sum(1).tolist())


def uld_rows_sum(z_s: torch.Tensor, s_counts: list[int], z_t: torch.Tensor, t_counts: list[int]) -> torch.Tensor:
    """``uld_distance_sum`` on response rows: ``z_s`` [N_s,V_s] and ``z_t`` [N_t,V_t], each the response positions
    of every sequence in order, ``s_counts``/``t_counts`` how many rows each sequence has."""
    width = max(z_s.shape[-1], z_t.shape[-1])
    total = z_s.new_zeros((), dtype=torch.float32)
    s_start = t_start = 0
    for s_n, t_n in zip(s_counts, t_counts):
        n = min(s_n, t_n)
        if n:
            p_s = torch.softmax(z_s[s_start:s_start + n].float(), -1).sort(-1, descending=True).values
            p_t = torch.softmax(z_t[t_start:t_start + n].float(), -1).sort(-1, descending=True).values
            p_s = torch.nn.functional.pad(p_s, (0, width - p_s.shape[-1]))
            p_t = torch.nn.functional.pad(p_t, (0, width - p_t.shape[-1]))
            total = total + (p_s - p_t).abs().sum()
        s_start, t_start = s_start + s_n, t_start + t_n
    return total


class ULD(SFT):
    """ULD baseline for different vocabularies: ``(1 - a) CE + a * ULD`` (a = 0.5: the paper's 0.5 CE + 0.5 ULD)."""

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        _require_cross_vocab("uld", batch, ctx)
        y, z_s, _ = response_outputs(student, batch, ctx.n_vocab)
        teacher_batch = _teacher_batch(batch)
        with torch.no_grad():
            z_t = head_logits(teacher_hidden_rows(ctx, teacher_batch), ctx.teacher, ctx.teacher_rows(),
                              detach_head=False)
        ce = cross_entropy_sum(z_s[None], y[None])
        uld = uld_rows_sum(z_s, (batch["labels"] != IGNORE).sum(1).tolist(), z_t,
                           (batch["teacher_labels"] != IGNORE).sum(1).tolist())
        return total_loss(ctx, ce, uld)


def _sums(x: torch.Tensor) -> torch.Tensor:
    """Sum, sum of squares and count of the entries of ``x`` (any shape), in float64: [3]."""
    x = x.double()
    return torch.stack([x.sum(), x.square().sum(), x.new_tensor(x.numel())])


def cma_example_sums(teacher, items: list, pad_id: int, normalisation: str, max_length: int,
                     batch_size: int = 8) -> torch.Tensor:
    """Per-example pieces of DSKD-CMA's three global standard deviations (PAPER.md section 2): for each example of
    ``items`` (``Encoded`` with their ``teacher`` encodings), the sum, sum of squares and count [3] of the entries
    of the teacher keys ``[e_t(x); e_t(y)]``, of ``h_t`` and of ``e_t(y)``, stacked to [n, 3 tensors, 3] (float64).

    ``normalisation``:
    - ``"official"``: every position of the sequence padded on the right with ``pad_id`` to ``max_length``, as the
      official collate pads every batch: the embeddings hold ``e_t(0)`` at every non-response position (prompt and
      padding), ``h_t`` is the teacher's own hidden state at every position of that padded sequence (a pad position
      attends to the real tokens only). The padding is materialised here, once per example, by running the teacher
      on the padded sequence (a cost of one teacher forward of ``max_length`` positions per training example, paid
      once per training run); the training steps themselves pad only to the longest sequence of a micro batch.
    - ``"response"``: the response positions only (their embeddings and hidden states).
    The teacher is frozen, so these are constants of the training set; ``combine_std`` pools them over a batch.
    """
    if normalisation not in CHOICES["cma_normalisation"]:
        raise ValueError(f"cma_normalisation must be one of {CHOICES['cma_normalisation']}, got {normalisation!r}")
    official = normalisation == "official"
    positions = getattr(teacher.config, "max_position_embeddings", None) or getattr(teacher.config, "n_positions",
                                                                                   None)
    if official and positions is not None and positions < max_length:
        raise ValueError(f"cma_normalisation 'official' pads every teacher sequence to max_length={max_length}, but "
                         f"the teacher has {positions} positions; lower training.max_length or use 'response'")
    embed = teacher.get_input_embeddings()
    device = embed.weight.device
    out = []
    with torch.no_grad():
        e_zero = embed(torch.zeros(1, dtype=torch.long, device=device))[0]
        zero_sums = _sums(e_zero)
        for start in range(0, len(items), batch_size):
            chunk = [e.teacher for e in items[start:start + batch_size]]
            width = max_length if official else max(len(e.input_ids) for e in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, e in enumerate(chunk):
                ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[i, :len(e.input_ids)] = 1
            hidden = final_hidden(teacher, {"input_ids": ids.to(device), "attention_mask": mask.to(device)})
            for i, e in enumerate(chunk):
                labels = torch.tensor(e.labels, device=device)
                response = (labels != IGNORE).nonzero().squeeze(-1)
                x, y = embed(ids[i, :len(e.labels)].to(device)[response]), embed(labels[response])
                others = width - len(response) if official else 0  # non-response positions: e_t(0)
                target = _sums(y) + others * zero_sums
                keys = _sums(x) + target + others * zero_sums
                h = _sums(hidden[i]) if official else _sums(hidden[i, response])
                out.append(torch.stack([keys, h, target]).cpu())
    return torch.stack(out)


def combine_std(sums: torch.Tensor) -> torch.Tensor:
    """Standard deviations (unbiased, as ``torch.std``) [3] of the pooled entries from per-example ``sums``
    [n, 3, 3] (see ``cma_example_sums``)."""
    total = sums.sum(0)
    s1, s2, n = total.unbind(-1)
    return ((s2 - s1 * s1 / n) / (n - 1)).clamp_min(0).sqrt()


class DSKDCrossModelAttention(SFT):
    """DSKD with cross-model attention for different vocabularies (the "DSKD-CMA" rows; PAPER.md section 2).

    Only response positions take part (prompt and padding become token id 0 and are masked out of the attention).
    Queries: ``P_query([e_s(x); e_s(y)])`` from the detached student embeddings of the current and next token;
    keys: ``[e_t(x); e_t(y)]`` of the teacher, detached, divided by their global std. Teacher values:
    ``P_t2s(h_t / std(h_t) + e_t(y) / std(e_t(y)))``; student values ``P_s2t(h_s)``. ``A = Q K^T / sqrt(2 d_t)``
    with -1e5 where either side is masked. Student space: softmax over the teacher axis, values, then the detached
    student head give ``z_t2s``; ``t2s_ce = CE(z_t2s, y)``; ``t2s_kd = D(z_s, z_t2s.detach())`` on the positions
    where ``argmax z_t2s == y``. Teacher space: softmax of ``A^T`` over the student axis, student values, the
    frozen teacher head give ``z_s2t``; ``s2t_kd = KL(p_t || p_s2t)`` on the teacher's response positions.
    ``KD = t2s_ce + t2s_kd + s2t_kd``. Embeddings and heads come from ``get_input_embeddings()`` and
    ``get_output_embeddings()``, so any causal LM (a GPT-2 teacher included) works on either side.

    The three standard deviations are pooled over the whole global batch (``begin_step``) from per-example sums
    computed once before training (``prepare``; ``Context.cma_normalisation`` says over which positions), so a
    step's value does not depend on how the global batch is split into micro batches or processes, nor on how far
    a micro batch is padded.
    """

    def build(self, student, teacher) -> torch.nn.Module:
        d_s, d_t = hidden_size(student), hidden_size(teacher)
        return torch.nn.ModuleDict({
            "query": torch.nn.Linear(2 * d_s, 2 * d_t),
            "t2s": torch.nn.Linear(d_t, d_s),
            "s2t": torch.nn.Linear(d_s, d_t),
        }).to(student.device)

    def prepare(self, encoded: list, tokenizer, ctx: Context) -> None:
        if ctx.teacher is None or ctx.teacher_tokenizer is None:
            raise ValueError("method 'dskd_cma' needs the teacher and its tokenizer (Context.teacher_tokenizer)")
        cached = ctx.teacher_states.cma_sums.get(ctx.cma_normalisation) if ctx.teacher_states is not None else None
        if cached is not None and len(cached) == len(encoded):
            sums = cached  # the cache's fingerprint covers the teacher, the data and max_length
        else:
            sums = cma_example_sums(ctx.teacher, encoded, ctx.teacher_tokenizer.pad_token_id,
                                    ctx.cma_normalisation, ctx.max_length)
        for enc, row in zip(encoded, sums):
            enc.cma_sums = row

    def begin_step(self, items: list, ctx: Context) -> None:
        if any(getattr(e, "cma_sums", None) is None for e in items):
            raise ValueError("method 'dskd_cma' needs the per-example statistics of its training set "
                             "(DSKDCrossModelAttention.prepare)")
        ctx.cma_scales = combine_std(torch.stack([e.cma_sums for e in items]))

    def terms(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        """Every term with its graph (token sums): ``ce``, ``t2s_ce``, ``t2s_kd``, ``s2t_kd``; diagnostics
        ``t2s_acc`` (count of response tokens the attended teacher predicts right: an accuracy after the trainer's
        division) and ``attention_entropy`` (entropy of the student-to-teacher attention, summed over response
        positions). ``ctx.cma_scales`` holds the global batch's standard deviations (``begin_step``). Heads run on
        response positions only (the terms are sums over them); the attention itself spans whole sequences, masked."""
        _require_cross_vocab("dskd_cma", batch, ctx)
        if ctx.modules is None or ctx.cma_scales is None:
            raise ValueError("method 'dskd_cma' needs its projectors (Method.build) and the global batch's "
                             "statistics (Method.begin_step)")
        s_mask, t_mask = batch["labels"] != IGNORE, batch["teacher_labels"] != IGNORE
        y = batch["labels"][s_mask]  # [N_s]
        h_s = final_hidden(student, batch)
        z_s = head_logits(h_s[s_mask], student, ctx.n_vocab, detach_head=False)  # [N_s,V_s]
        keys, t_values_in, z_t, teacher_head = self._teacher_side(batch, ctx, t_mask)
        queries = _project(ctx.modules["query"], self._student_index(student, batch, s_mask)).float()
        scores = queries @ keys.transpose(-1, -2) / (2 * hidden_size(ctx.teacher)) ** 0.5
        scores = scores + (~(s_mask.unsqueeze(-1) & t_mask.unsqueeze(1))).float() * -1e5
        t_values = _project(ctx.modules["t2s"], t_values_in).float()
        ce = cross_entropy_sum(z_s, y)
        student_space = self._student_space(student, ctx, z_s, y, scores, t_values, s_mask)
        s_values = _project(ctx.modules["s2t"], h_s).float()
        s2t_kd = self._teacher_space(ctx, scores, s_values, t_mask, teacher_head, z_t)
        # the terms in the order of the train log's columns (and of the training curves' legend)
        return {"ce": ce, "t2s_ce": student_space["t2s_ce"], "t2s_kd": student_space["t2s_kd"], "s2t_kd": s2t_kd,
                "t2s_acc": student_space["t2s_acc"], "attention_entropy": student_space["attention_entropy"]}

    @staticmethod
    def _teacher_side(batch: dict, ctx: Context, t_mask: torch.Tensor):
        """The teacher's side, without gradient: the keys ``[e_t(x); e_t(y)] / std`` [B,T,2d_t] (float32), the input
        of the teacher values ``h_t / std(h_t) + e_t(y) / std(e_t(y))`` [B,T,d_t], the teacher's logits ``z_t``
        [N_t,V_t] (``LazyLogits``: computed in blocks where the loss reads them) and its frozen head."""
        with torch.no_grad():
            t_labels = batch["teacher_labels"]
            # h_t is needed at the teacher's response positions only: elsewhere the attention weights are exactly
            # 0 (scores -1e5), so those positions are filled with zeros
            h_rows = teacher_hidden_rows(ctx, _teacher_batch(batch))  # [N_t,d_t]
            t_rows = ctx.teacher_rows()
            teacher_head = frozen_head(ctx.teacher, t_rows)
            z_t = LazyLogits(h_rows, teacher_head, t_rows)
            h_t = h_rows.new_zeros(*t_mask.shape, h_rows.shape[-1])
            h_t[t_mask] = h_rows
            t_embed = ctx.teacher.get_input_embeddings()
            t_target = t_embed(t_labels.masked_fill(~t_mask, 0))
            t_index = torch.cat([t_embed(batch["teacher_input_ids"].masked_fill(~t_mask, 0)), t_target], -1)
            # each scale in the dtype of what it divides, as the official code's ``x / x.std()``
            k_std, h_std, y_std = (scale.to(device=x.device, dtype=x.dtype)
                                   for scale, x in zip(ctx.cma_scales, (t_index, h_t, t_target)))
            return (t_index / k_std).float(), h_t / h_std + t_target / y_std, z_t, teacher_head

    @staticmethod
    def _student_index(student, batch: dict, s_mask: torch.Tensor) -> torch.Tensor:
        """The queries' input ``[e_s(x); e_s(y)]`` [B,L,2d_s] from the student's detached embeddings."""
        with torch.no_grad():
            s_embed = student.get_input_embeddings()
            return torch.cat([s_embed(batch["input_ids"].masked_fill(~s_mask, 0)),
                              s_embed(batch["labels"].masked_fill(~s_mask, 0))], -1)

    @staticmethod
    def _student_space(student, ctx: Context, z_s, y, scores, t_values, s_mask) -> dict[str, torch.Tensor]:
        """The student-space terms: the attended teacher ``x_t2s`` [N_s,d_s] through the detached student head gives
        ``z_t2s``; ``t2s_ce = CE(z_t2s, y)``, ``t2s_kd = D(z_s, z_t2s.detach())`` where ``argmax z_t2s == y``, with
        the count of those positions and the attention's entropy. The head runs in ``repro.lean`` (gradient to the
        attended values only): of the vocabulary-sized tensors only the student's logits, their gradient and the
        detached ``z_t2s`` exist whole."""
        t2s_weights = torch.softmax(scores, -1)
        x_t2s = (t2s_weights @ t_values)[s_mask]
        student_head = frozen_head(student, ctx.n_vocab)
        with torch.no_grad():
            z_t2s = student_head(x_t2s)  # [N_s,V_s]
        correct = z_t2s.argmax(-1) == y
        t2s_ce, _ = head_cross_entropy_sum(x_t2s, student_head, y, logits=z_t2s)
        entropy = -(t2s_weights * torch.log(t2s_weights.clamp_min(1e-30))).sum(-1)
        return {"t2s_ce": t2s_ce,
                "t2s_kd": ctx.divergence_fn()(z_s[correct], z_t2s[correct], ctx.kd_temperature).sum(),
                "t2s_acc": correct.sum().float(),
                "attention_entropy": entropy.detach()[s_mask].sum()}

    @staticmethod
    def _teacher_space(ctx: Context, scores, s_values, t_mask, teacher_head, z_t) -> torch.Tensor:
        """The teacher-space term: the softmax of ``A^T`` over the student axis attends the student values, the
        frozen teacher head gives ``z_s2t`` [N_t,V_t]; ``s2t_kd = KL(p_t || p_s2t)`` on the teacher's response
        positions (always KL, as the official code)."""
        s2t_weights = torch.softmax(scores.transpose(-1, -2), -1)
        x_s2t = (s2t_weights @ s_values)[t_mask]  # [N_t,d_t]
        return head_divergence("kl", x_s2t, teacher_head, z_t, ctx.kd_temperature).sum()

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        terms = self.terms(student, batch, ctx)
        kd = terms["t2s_ce"] + terms["t2s_kd"] + terms["s2t_kd"]
        return total_loss(ctx, terms.pop("ce"), kd, **terms)


def align_dataset(encoded: list, student_tokenizer, teacher_tokenizer, tokens: str = "input",
                  vocab_map=None) -> float:
    """Set ``Encoded.teacher_positions`` of every example (``repro.alignment.align_examples``: DTW over the
    ``tokens`` ("input" or "label") at the response positions of both tokenisations, batched over the examples;
    with "input" a pair is kept only where ``vocab_map`` [V_t] sends the teacher's id to the student's); return the
    share of student response positions aligned one-to-one."""
    if tokens == "input" and vocab_map is None:
        raise ValueError("aligning the input tokens (the official MinED) needs the vocabulary map")
    s_strings, t_strings = token_strings(student_tokenizer), token_strings(teacher_tokenizer)
    examples = [(enc.input_ids, enc.labels, enc.teacher.input_ids, enc.teacher.labels) for enc in encoded]
    aligned = total = 0
    for enc, positions in zip(encoded, align_examples(examples, s_strings, t_strings, vocab_map, tokens)):
        enc.teacher_positions = positions
        aligned += sum(j >= 0 for j in positions)
        total += sum(label != IGNORE for label in enc.labels)
    return aligned / max(total, 1)


def mined_kd_sum(z_s: torch.Tensor, labels: torch.Tensor, z_t: torch.Tensor, teacher_positions: torch.Tensor,
                 vocab_map: torch.Tensor, temperature: float, target: str = "first",
                 first_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MinED's KD term (PAPER.md section 2), summed over the student's response positions; and the count of
    one-to-one aligned positions: the plain computation (``MinED.loss`` computes the same in one lean pass).

    Shapes: ``z_s`` [B,L,V_s], ``labels`` [B,L], ``z_t`` [B,T,V_t'] (V_t' >= the map's V_t: padded rows are never
    read), ``teacher_positions`` [B,L] (-1: none), ``vocab_map`` [V_t] (teacher id -> student id), ``first_ids``
    [V_s] (``repro.alignment.first_teacher_ids``; derived from ``vocab_map`` when not given). At an aligned
    position the target is the teacher's distribution in the student vocabulary:
    - ``"first"`` (the official code): student id ``v`` takes the teacher logit of ``first_ids[v]``, the first
      teacher id mapped to it; ids that no teacher id maps to get logit -1e5; then ``softmax(. / tau)``;
    - ``"sum"``: ``softmax(z_t / tau)`` over the map's teacher ids carried through ``vocab_map``, the probabilities
      of teacher ids that map to the same student id added up (unmapped student ids: probability 0).
    Elsewhere the target is one-hot on the gold token. The term is the forward KL ``sum_v q (log q - log p_s)``
    with ``p_s = softmax(z_s / tau)``.
    """
    response = labels != IGNORE
    aligned = response & (teacher_positions >= 0)
    b, i = aligned.nonzero(as_tuple=True)
    return mined_kd_rows(z_s[response], labels[response], z_t[b, teacher_positions[b, i]], aligned[response],
                         vocab_map, temperature, target, first_ids)


def mined_kd_rows(z_s: torch.Tensor, y: torch.Tensor, z_aligned: torch.Tensor, aligned: torch.Tensor,
                  vocab_map: torch.Tensor, temperature: float, target: str = "first",
                  first_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``mined_kd_sum`` on response rows: student logits ``z_s`` [N,V_s] and gold tokens ``y`` [N], ``aligned`` [N]
    (rows aligned one-to-one) and the teacher's logits ``z_aligned`` [A,V_t'] at those rows, in row order; plain
    autograd."""
    if target not in CHOICES["mined_target"]:
        raise ValueError(f"mined_target must be one of {CHOICES['mined_target']}, got {target!r}")
    log_ps = torch.log_softmax(z_s.float() / temperature, -1)
    total = -log_ps[~aligned].gather(-1, y[~aligned, None]).sum()
    if aligned.any():
        rows = z_aligned[:, :len(vocab_map)].float()  # [A, V_t]
        if target == "first":
            if first_ids is None:
                first_ids = first_teacher_ids(vocab_map, z_s.shape[-1])
            q_logits = _mined_first_logits(rows, first_ids)  # [A, V_s]
            log_q = torch.log_softmax(q_logits / temperature, -1)
            q = log_q.exp()
        else:
            p_t = torch.softmax(rows / temperature, -1)
            q = torch.zeros(len(rows), z_s.shape[-1], device=z_s.device).index_add_(1, vocab_map, p_t)
            log_q = torch.log(q.clamp_min(1e-30))
        terms = torch.where(q > 0, q * (log_q - log_ps[aligned]), 0.0)
        total = total + terms.sum()
    return total, aligned.sum().float()


def _mined_first_logits(rows: torch.Tensor, first_ids: torch.Tensor) -> torch.Tensor:
    """The official MinED target's logits [A, V_s]: each student id takes the teacher logit of ``first_ids`` (its
    first mapped teacher id), unmapped ids -1e5."""
    return rows[:, first_ids.clamp_min(0)].masked_fill(first_ids < 0, -1e5)


# A one-hot target as logits: 0 at the gold token, this elsewhere. exp(ONE_HOT_FILL / tau) is exactly 0 in float32
# for any tau below 1e28, so the softmax is exactly one-hot and the forward KL to it is exactly -log p_s(gold).
ONE_HOT_FILL = -1e30


def mined_target_logits(y: torch.Tensor, z_aligned: torch.Tensor, aligned: torch.Tensor,
                        first_ids: torch.Tensor) -> torch.Tensor:
    """The official MinED targets of every response row as logits [N,V_s]: at aligned rows the first-id logits of
    the teacher (``z_aligned`` [A,V_t'] in row order), elsewhere one-hot on the gold token ``y`` (``ONE_HOT_FILL``
    off it), so that ``sum_rows KL(softmax(target / tau) || p_s)`` is ``mined_kd_rows(..., target="first")`` and
    one lean pass computes it with the CE."""
    targets = torch.full((len(y), len(first_ids)), ONE_HOT_FILL, device=y.device)
    gold = (~aligned).nonzero().squeeze(-1)
    targets[gold, y[gold]] = 0.0
    if aligned.any():
        targets[aligned] = _mined_first_logits(z_aligned.float(), first_ids)
    return targets


class MinED(SFT):
    """MinED baseline for different vocabularies (FuseLLM's minimum-edit-distance alignment): forward KL at
    tau 2 to the teacher's distribution carried into the student vocabulary, on DTW-aligned positions
    (``Context.mined_alignment``, ``mined_target`` and ``mined_vocab_map`` choose between the official code and
    the alternatives)."""

    def prepare(self, encoded: list, tokenizer, ctx: Context) -> None:
        if ctx.teacher_tokenizer is None:
            raise ValueError("method 'mined' needs the teacher's tokenizer (Context.teacher_tokenizer)")
        mapping = vocab_mapping(ctx.teacher_tokenizer, tokenizer, marks=ctx.mined_vocab_map)
        mapping = mapping[: ctx.teacher_n_vocab]
        device = ctx.teacher.device if ctx.teacher is not None else "cpu"
        ctx.vocab_map = torch.as_tensor(mapping, device=device)
        ctx.first_ids = first_teacher_ids(ctx.vocab_map, ctx.n_vocab)
        ctx.aligned_share = align_dataset(encoded, tokenizer, ctx.teacher_tokenizer, ctx.mined_alignment, mapping)

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        _require_cross_vocab("mined", batch, ctx)
        if "teacher_positions" not in batch or ctx.vocab_map is None or ctx.first_ids is None:
            raise ValueError("method 'mined' needs aligned batches, a vocabulary map and its first teacher ids "
                             "(MinED.prepare)")
        y, z_s, _ = response_outputs(student, batch, ctx.n_vocab)  # [N], [N,V_s]
        response = batch["labels"] != IGNORE
        positions = batch["teacher_positions"]
        aligned = response & (positions >= 0)
        teacher_batch = _teacher_batch(batch)
        with torch.no_grad():
            # the teacher's head runs on the aligned rows only; row_of: response position -> its row
            h_rows = teacher_hidden_rows(ctx, teacher_batch)
            t_mask = teacher_batch["labels"] != IGNORE
            row_of = (t_mask.flatten().cumsum(0) - 1).view(t_mask.shape)
            b, i = aligned.nonzero(as_tuple=True)
            z_aligned = head_logits(h_rows[row_of[b, positions[b, i]]], ctx.teacher, ctx.teacher_n_vocab,
                                    detach_head=False)
        aligned = aligned[response]  # [N]
        if ctx.mined_target == "first":  # (1 - a) CE + a KD in one pass (the same values and gradients)
            targets = mined_target_logits(y, z_aligned, aligned, ctx.first_ids)
            loss, ce, kd = weighted_ce_and_divergence("kl", z_s, y, targets, ctx.kd_temperature, 1 - ctx.kd_rate,
                                                      ctx.kd_rate)
            return {"loss": loss, "ce": ce, "kd": kd, "aligned": aligned.sum().float()}
        kd, count = mined_kd_rows(z_s, y, z_aligned, aligned, ctx.vocab_map, ctx.kd_temperature, ctx.mined_target,
                                  ctx.first_ids)
        return total_loss(ctx, cross_entropy_sum(z_s, y), kd, aligned=count)


# One instance per registry entry of repro.names (its class and arguments named there).
METHODS = {name: globals()[traits.implementation](name, **dict(traits.options))
           for name, traits in names.METHODS.items()}


def get_method(name: str):
    names.method(name)  # an unknown name is named here
    return METHODS[name]
