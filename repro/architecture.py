"""A model's architecture as the config names it, and as ``transformers`` names it: the one translation between the
two (torch-free: the GPU-hour and memory estimates read it while the workflow plans).

The config describes a model by ``arch`` (``gpt2``, ``llama``, ``mistral``, ``qwen2``: the families of the paper's
models, PAPER.md section 3) and sizes: ``layers``, ``hidden``, ``heads``, optional ``kv_heads`` (grouped-query
attention), ``intermediate`` (MLP width), ``max_positions``, ``vocab_size`` (embedding rows) and ``rope_theta``. A
built model (``models.<name>.arch``) is such a description; a hub model may carry its published one
(``models.<name>.architecture``), which the estimate counts from offline and the rehearsal builds at a cut depth.
"""
from __future__ import annotations

ARCHS = ("gpt2", "llama", "mistral", "qwen2")
GATED = ("llama", "mistral", "qwen2")  # gated-MLP families: q/k/v/o attention, gate/up/down MLP, RMSNorm, rotary


def default_intermediate(arch: str, hidden: int) -> int:
    """The MLP width when a description leaves it out: 4x hidden for GPT-2, about 8/3 x hidden (rounded to 16) for
    the gated-MLP families (their published ratio)."""
    return 4 * hidden if arch == "gpt2" else 16 * round(hidden * 8 / 3 / 16)


def problems(spec: dict, key: str) -> list[str]:
    """What makes a description unbuildable, one line each naming the config ``key`` (e.g. ``models.x``): heads that
    do not divide the width, key/value heads that do not divide the heads, an odd rotary head size."""
    out = []
    hidden, heads = spec["hidden"], spec["heads"]
    if hidden % heads:
        out.append(f"config key '{key}.heads': {heads} attention heads must divide the hidden size ({hidden})")
        return out
    kv_heads = spec.get("kv_heads")
    if kv_heads and spec["arch"] == "gpt2" and kv_heads != heads:
        out.append(f"config key '{key}.kv_heads': GPT-2 has no grouped-query attention (kv_heads {kv_heads} != "
                   f"heads {heads})")
    elif kv_heads and heads % kv_heads:
        out.append(f"config key '{key}.kv_heads': {kv_heads} key/value heads must divide the attention heads "
                   f"({heads})")
    if spec["arch"] in GATED and (hidden // heads) % 2:
        out.append(f"config key '{key}.heads': rotary position embeddings need an even head size, but "
                   f"{hidden} / {heads} = {hidden // heads}")
    return out


def hf_fields(spec: dict, vocab_size: int) -> dict:
    """The ``transformers`` config fields (config.json names, with ``model_type``) of description ``spec`` with
    ``vocab_size`` embedding rows. Dropout and special token ids are the builder's (``repro.models.build_config``)."""
    arch, hidden, layers, heads = spec["arch"], spec["hidden"], spec["layers"], spec["heads"]
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    positions = spec.get("max_positions", 512)
    if arch == "gpt2":
        return {"model_type": "gpt2", "vocab_size": vocab_size, "n_positions": positions, "n_embd": hidden,
                "n_layer": layers, "n_head": heads, "n_inner": spec.get("intermediate"), "tie_word_embeddings": True}
    fields = {"model_type": arch, "vocab_size": vocab_size, "hidden_size": hidden,
              "intermediate_size": spec.get("intermediate") or default_intermediate(arch, hidden),
              "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": spec.get("kv_heads") or heads, "max_position_embeddings": positions,
              "tie_word_embeddings": False}
    if "rope_theta" in spec:
        fields["rope_theta"] = float(spec["rope_theta"])
    if arch == "mistral":
        fields["sliding_window"] = positions
    return fields


def published_fields(spec: dict) -> dict:
    """The config.json fields of a published description (``models.<name>.architecture``, which gives
    ``vocab_size``)."""
    return hf_fields(spec, spec["vocab_size"])
