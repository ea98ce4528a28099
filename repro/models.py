"""Causal language models: build the miniature ones from ``transformers`` configs, load any one by id or path.

The miniature models use the architecture families of the paper's models (PAPER.md section 3): ``gpt2`` (GPT-2),
``llama`` (LLaMA-2, TinyLLaMA), ``mistral`` (Mistral) and ``qwen2`` (Qwen1.5, which ``transformers`` runs with the
Qwen2 architecture). They are randomly initialised, saved with ``save_pretrained``, and loaded back through
``AutoModelForCausalLM`` by path, so the training code is the same as for a hub id.
"""
from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from . import architecture
from .architecture import ARCHS
from .io import atomic_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # the dtypes weights are stored and held in


def build_config(arch: str, vocab_size: int, layers: int, hidden: int, heads: int, kv_heads: int | None = None,
                 intermediate: int | None = None, max_positions: int = 512, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None, dropout: float | None = None,
                 rope_theta: float | None = None):
    """Return a ``transformers`` config of family ``arch`` with the given sizes (``repro.architecture.hf_fields``:
    ``intermediate`` defaults to 4x hidden for GPT-2 and about 8/3x hidden for the gated-MLP families).

    ``dropout`` defaults to each family's own (0.1 for GPT-2, none for the others).
    """
    spec = {"arch": arch, "layers": layers, "hidden": hidden, "heads": heads, "max_positions": max_positions,
            **{k: v for k, v in (("kv_heads", kv_heads), ("intermediate", intermediate), ("rope_theta", rope_theta))
               if v is not None}}
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    if found := architecture.problems(spec, "model"):
        raise ValueError("; ".join(found))
    fields = architecture.hf_fields(spec, vocab_size)
    model_type = fields.pop("model_type")
    special = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    if arch == "gpt2":
        fields.pop("tie_word_embeddings")  # GPT-2 always ties its head to its input embeddings
        drop = {} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
        # gelu_pytorch_tanh is GPT-2's own tanh-approximated GELU (gelu_new) as one fused kernel: the same function,
        # about a quarter faster on a CPU
        return transformers.GPT2Config(activation_function="gelu_pytorch_tanh", **fields, **special, **drop)
    drop = {} if dropout is None else {"attention_dropout": dropout}
    return transformers.AutoConfig.for_model(model_type, **fields, **special, **drop)


def padded_vocab_size(n_tokens: int, multiple: int | None) -> int:
    """Embedding rows for a tokenizer of ``n_tokens`` ids: rounded up to ``multiple`` when given.

    Qwen1.5 has 151,936 embedding rows for 151,646 token ids (PAPER.md section 3); a miniature Qwen-like model
    keeps such padded rows so the code that must handle them is exercised.
    """
    if not multiple:
        return n_tokens
    return -(-n_tokens // multiple) * multiple


def init_model(spec: dict, tokenizer, out_dir: str | os.PathLike, seed: int) -> int:
    """Build a randomly initialised model from a config-file model ``spec`` and save it (with its tokenizer); return
    its parameter count.

    ``spec`` keys: ``arch``, ``layers``, ``hidden``, ``heads``, optional ``kv_heads``, ``intermediate``,
    ``max_positions``, ``rope_theta``, ``dropout``, ``vocab_size`` (embedding rows, at least the tokenizer's ids) or
    ``pad_vocab_to_multiple_of``, and ``dtype`` (the saved weights' storage dtype, ``float32`` unless given).
    """
    rows = spec.get("vocab_size") or padded_vocab_size(len(tokenizer), spec.get("pad_vocab_to_multiple_of"))
    if rows < len(tokenizer):
        raise ValueError(f"model vocab_size {rows} is smaller than its tokenizer's {len(tokenizer)} token ids "
                         f"({tokenizer.name_or_path})")
    config = build_config(
        spec["arch"], rows, spec["layers"], spec["hidden"], spec["heads"], spec.get("kv_heads"),
        spec.get("intermediate"), spec.get("max_positions", 512), tokenizer.bos_token_id, tokenizer.eos_token_id,
        tokenizer.pad_token_id, spec.get("dropout"), spec.get("rope_theta"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)  # initialised in fp32, whatever it is stored in
    model = model.to(DTYPES[spec.get("dtype", "float32")])
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return count_parameters(model)


ADAPTER_CONFIG = "adapter_config.json"  # what peft's save_pretrained writes beside the adapter's weights


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a LoRA adapter (peft's ``adapter_config.json``) and no model of its
    own (no ``config.json``): a LoRA student's trained model."""
    folder = Path(path)
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()


def load_model(name_or_path: str | os.PathLike, dtype: str = "float32"):
    """Load a causal LM by hub id or local path, in ``dtype`` (``float32`` or ``bfloat16``). A folder holding a
    LoRA adapter (``is_adapter``: a LoRA student's trained model) is loaded as its base with the adapter merged, in
    fp32 and then cast once to ``dtype``: the weights ``merge_lora`` would have saved."""
    if is_adapter(name_or_path):
        base = json.loads((Path(name_or_path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
        return merged_model(base, name_or_path, dtype)
    return AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=DTYPES[dtype])


def save_model(model, tokenizer, out_dir: str | os.PathLike, dtype: str = "float32") -> None:
    """Save ``model`` with ``tokenizer`` to ``out_dir`` atomically, its weights in ``dtype`` (the live model is left
    as it is: a full fine-tune's best checkpoint is saved while its fp32 master weights train on). Tensors that share
    storage (a tied head) stay shared, so the tie is saved once. A LoRA-wrapped model saves its adapter alone, in
    the adapters' own dtype (fp32: megabytes)."""
    target = DTYPES[dtype]
    state = None
    own = {} if hasattr(model, "peft_config") else model.state_dict()
    if any(t.dtype != target for t in own.values() if t.is_floating_point()):
        cast: dict[tuple, torch.Tensor] = {}  # one cast per shared storage
        state = {}
        for name, tensor in own.items():
            if not tensor.is_floating_point():
                state[name] = tensor
                continue
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key not in cast:
                cast[key] = tensor.detach().to(target)
            state[name] = cast[key]
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        if state is not None:  # save_pretrained writes the live model's dtype into the config
            config_file = Path(tmp) / "config.json"
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config["dtype"] = dtype
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


LORA_KEYS = ("rank", "alpha", "dropout", "target_modules")


def add_lora(model, spec: dict):
    """Wrap ``model`` with LoRA adapters (peft): ``spec`` holds ``rank``, ``alpha``, ``dropout`` and
    ``target_modules`` (module names, e.g. ``["q_proj", "v_proj"]`` for LLaMA, ``["c_attn"]`` for GPT-2). Only the
    adapters are trainable. The frozen base keeps the dtype it was loaded in (bf16 for a bf16 run: half the memory
    of fp32); the adapters are fp32 whatever the base's, the master weights AdamW updates."""
    unknown = set(spec) - set(LORA_KEYS)
    missing = set(LORA_KEYS) - set(spec)
    if unknown or missing:
        raise ValueError(f"lora settings: expected keys {list(LORA_KEYS)}, got unknown {sorted(unknown)} and "
                         f"missing {sorted(missing)}")
    config = LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                        target_modules=list(spec["target_modules"]), task_type="CAUSAL_LM",
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2's Conv1D stores W transposed
    with _quiet_peft():
        return get_peft_model(model, config, autocast_adapter_dtype=True)  # (True: bf16/fp16 adapters become fp32)


@contextmanager
def _quiet_peft():
    """peft's ``PeftModel`` asks the model ``is_gradient_checkpointing``, an alias that transformers 5 deprecates
    with a FutureWarning: every LoRA wrap and merge would print it to a rendered notebook's stderr (seen in the first
    LoRA run of a real model through the workflow). The question itself is harmless, so only that warning is
    silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def merge_lora(base: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike, tokenizer,
               dtype: str = "float32") -> None:
    """Load ``base``, apply the LoRA adapter saved in ``adapter``, merge it into the weights and save the plain
    model (with ``tokenizer``) to ``out_dir`` in ``dtype``, atomically: a LoRA teacher is merged before
    distillation. The merge is computed in fp32 (base and fp32 adapter), then cast once to ``dtype``, the dtype the
    model's readers load it in (``bfloat16`` under bf16: half the bytes of fp32, about 13.5 GB for a 7B teacher)."""
    save_model(merged_model(base, adapter, dtype), tokenizer, out_dir, dtype)


def merged_model(base: str | os.PathLike, adapter: str | os.PathLike, dtype: str = "float32"):
    """``base`` (loaded in fp32) with the LoRA adapter saved in ``adapter`` merged into its weights, cast once to
    ``dtype``."""
    with _quiet_peft():
        return PeftModel.from_pretrained(load_model(base), adapter).merge_and_unload().to(DTYPES[dtype])


class TeacherParts(torch.nn.Module):
    """The only parts of a frozen teacher that a cell reading the teacher-state cache uses (``repro.teacher_states``
    holds the final hidden states its body would compute): the output head (``get_output_embeddings()``: weight
    [V,d], bias [V] if the model has one) and, for a method with the ``teacher_embeddings`` trait (DSKD-CMA), the
    input embeddings (``get_input_embeddings()``: weight [V,d], the head's own tensor when the model ties them), with
    the checkpoint's ``config``. Both are the model's own module classes, so their forward is the model's. There is
    no transformer body: its forward and ``base_model`` fail, naming the checkpoint and what to do instead."""

    def __init__(self, config, head: torch.nn.Module, embeddings: torch.nn.Module | None, source: str):
        super().__init__()
        self.config = config
        self.head = head
        self.embeddings = embeddings
        self.source = source

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head

    def get_input_embeddings(self) -> torch.nn.Module:
        if self.embeddings is None:
            raise ValueError(f"{self.source}: the teacher parts hold no input embeddings; a method that reads them "
                             f"needs the trait teacher_embeddings (repro.names.METHODS)")
        return self.embeddings

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def base_model(self):
        raise self._no_body()

    def forward(self, *args, **kwargs):
        raise self._no_body()

    def _no_body(self) -> RuntimeError:
        parts = "head" if self.embeddings is None else "head and input embeddings"
        return RuntimeError(f"{self.source}: only the teacher's {parts} are loaded (the teacher-state cache stands "
                            f"in for its body), but something asked to "
                            f"run its body; build the cache with what it needs (python -m repro.teacher_states, "
                            f"--cma for DSKD-CMA) or set training.teacher_cache: false")


def load_teacher_parts(name_or_path: str | os.PathLike, dtype: str = "float32",
                       embeddings: bool = False) -> TeacherParts:
    """The output head (and, with ``embeddings``, the input embeddings) of the causal LM at ``name_or_path`` (hub id
    or local folder) in ``dtype``, read by tensor name from its safetensors checkpoint (``model.safetensors`` or the
    shards of ``model.safetensors.index.json``) without building its body: a cached student cell holds
    ``V x d`` (``2 V x d`` for DSKD-CMA with untied embeddings) teacher parameters instead of the whole model.

    The tensor names come from the model's own structure, built on the meta device (no memory):
    ``get_output_embeddings()`` / ``get_input_embeddings()`` and their parameters' names. A tied head (GPT-2, or
    ``tie_word_embeddings``) is read from whichever of the tied names the checkpoint holds, and a name is also
    looked up with and without the model's base prefix (GPT-2's hub checkpoint says ``wte.weight`` for
    ``transformer.wte.weight``), as ``from_pretrained`` does."""
    source = str(name_or_path)
    config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    head = skeleton.get_output_embeddings()
    if head is None:
        raise ValueError(f"{source}: the model ({type(skeleton).__name__}) has no output head")
    modules = {"output head": head, **({"input embeddings": skeleton.get_input_embeddings()} if embeddings else {})}
    module_names = {id(m): n for n, m in skeleton.named_modules()}
    tied: dict[int, list[str]] = {}  # a parameter's every name in the model (tied parameters have several)
    for name, param in skeleton.named_parameters(remove_duplicate=False):
        tied.setdefault(id(param), []).append(name)
    checkpoint = _SafetensorsCheckpoint(source)
    loaded: dict[int, torch.nn.Parameter] = {}  # keyed by the meta parameter, so tied modules share one tensor
    for what, module in modules.items():
        for leaf, meta in list(module.named_parameters()):
            if id(meta) not in loaded:
                own = f"{module_names[id(module)]}.{leaf}"
                names = [own] + [n for n in tied[id(meta)] if n != own]
                value = checkpoint.tensor(names, skeleton.base_model_prefix, what, tuple(meta.shape))
                loaded[id(meta)] = torch.nn.Parameter(value.to(DTYPES[dtype]), requires_grad=False)
            owner, _, attr = leaf.rpartition(".")
            setattr(module.get_submodule(owner), attr, loaded[id(meta)])
        left = [n for n, b in module.named_buffers() if b.is_meta]
        if left:  # e.g. a scale kept as a non-persistent buffer: not in the checkpoint, so not rebuilt here
            raise ValueError(f"{source}: the {what} ({type(module).__name__}) has buffers {left} that the checkpoint "
                             f"does not hold; set training.teacher_cache: false to load the whole teacher")
    config.dtype = DTYPES[dtype]  # what from_pretrained records of the weights it holds
    return TeacherParts(config, head, modules.get("input embeddings"), source).eval()


class _SafetensorsCheckpoint:
    """The tensors of a safetensors checkpoint by name: one ``model.safetensors`` or the shards that
    ``model.safetensors.index.json`` maps each name to (a hub id's files through the local Hugging Face cache)."""

    def __init__(self, source: str):
        self.source = source
        self.file = cached_file(source, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False)
        if self.file is not None:
            with open(self.file) as f:
                self.shards = json.load(f)["weight_map"]
            return
        self.file = cached_file(source, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False)
        if self.file is None:
            raise FileNotFoundError(f"{source}: no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}; the teacher's "
                                    f"head is read from a safetensors checkpoint (save_pretrained's format)")
        with safe_open(self.file, framework="pt") as f:
            self.shards = {key: SAFE_WEIGHTS_NAME for key in f.keys()}

    def tensor(self, names: list[str], prefix: str, what: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The first of ``names`` (each also with and without ``prefix.``) that the checkpoint holds, checked to
        have ``shape``; a clear error naming the file and the tensor otherwise."""
        keys = []
        for name in names:
            short = name.removeprefix(f"{prefix}.")
            keys += [name, short if short != name else f"{prefix}.{name}"]
        key = next((k for k in keys if k in self.shards), None)
        if key is None:
            raise ValueError(f"{self.file}: no tensor {names[0]!r} for the teacher's {what} (looked for "
                             f"{', '.join(keys)})")
        with safe_open(cached_file(self.source, self.shards[key]), framework="pt") as f:
            value = f.get_tensor(key)
        if tuple(value.shape) != shape:
            raise ValueError(f"{self.file}: tensor {key!r} has shape {list(value.shape)}, the model's config "
                             f"expects {list(shape)}")
        return value
