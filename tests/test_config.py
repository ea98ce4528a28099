import copy
import re

import pytest

from conftest import DAG_MODULES, REPO
from repro.schema import ConfigError, load_yaml
from repro.validation import load_config, validate_config


@pytest.fixture()
def config():
    return load_yaml(REPO / "config" / "config.yaml")


def test_default_config_is_valid(config):
    assert validate_config(copy.deepcopy(config)) == config


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(trainig={}), "config key 'trainig' is unknown"),
    (lambda c: c["training"].update(lrr=1), "config key 'training.lrr' is unknown"),
    (lambda c: c["training"].update(batch_size="32"), "config key 'training.batch_size': '32' is not of type"),
    (lambda c: c["evaluation"].update(top_p=1.5), "config key 'evaluation.top_p'"),
    (lambda c: c["data"].pop("n_train"), "config key 'data': 'n_train' is a required property"),
    (lambda c: c.update(methods=["kd", "magic"]), "config key 'methods.1': 'magic' is not one of"),
    (lambda c: c["pairs"]["gpt2"].update(student="nope"), "config key 'pairs.gpt2.student': 'nope' is not a key"),
    (lambda c: c["models"]["gpt2_student"].update(tokenizer="nope"),
     "config key 'models.gpt2_student.tokenizer': 'nope' is not a key of 'tokenizers'"),
    (lambda c: c["models"]["gpt2_student"].update(layer=3), "config key 'models.gpt2_student.layer' is unknown"),
    (lambda c: c["models"]["gpt2_student"].update(hidden=-1), "config key 'models.gpt2_student.hidden'"),
    (lambda c: c["training"].update(micro_batch_size=5),
     "'pairs.gpt2.teacher_training': micro_batch_size x processes (5 x 1) must divide training.batch_size (8)"),
    (lambda c: c["pairs"]["gpt2"]["student_training"].update(processes=3),
     "'pairs.gpt2.student_training': micro_batch_size x processes (8 x 3)"),
    (lambda c: c["models"]["gpt2_student"].update(tokenizer="llama"),
     "config key 'pairs.gpt2.methods': ['dskd', 'dskd_student_space', 'kd'] need a shared vocabulary, but pair "
     "'gpt2' has tokenizers 'gpt2' and 'llama'"),
    (lambda c: c["pairs"]["gpt2"].update(methods=["uld", "minedd"]), "config key 'pairs.gpt2.methods.1': 'minedd'"),
    (lambda c: c.update(ablation=["nope"]), "config key 'ablation': 'nope' is not a key of 'pairs'"),
    (lambda c: c.update(ablation=["llama"]), "config key 'ablation': pair 'llama' lacks the Table 3 methods "
                                             "['dskd_student_space']"),
    (lambda c: c["training"].update(batch_size=32.0), "config key 'training.batch_size': 32.0 is not of type "
                                                      "'integer'"),
    (lambda c: c["models"]["gpt2_student"].update(heads=3),
     "config key 'models.gpt2_student.heads': 3 attention heads must divide the hidden size (64)"),
    (lambda c: c["models"]["tinyllama_student"].update(kv_heads=3),
     "config key 'models.tinyllama_student.kv_heads': 3 key/value heads must divide the attention heads (4)"),
    (lambda c: c["training"].update(max_prompt_length=600),
     "config key 'training.max_prompt_length': 600 is more than training.max_length (512)"),
    (lambda c: c["training"].update(max_length=1024, max_prompt_length=256),
     "config key 'models.gpt2_teacher.max_positions': 512 positions (512 when not given) are fewer than "
     "training.max_length (1024)"),
    (lambda c: c["figures"]["judge"].update(generation_seed=20),
     "config key 'figures.judge.generation_seed': 20 is not one of evaluation.seeds [10]"),
    (lambda c: c["figures"]["representation"].update(divergence="tvd"),
     "'figures.representation.divergence'"),
    (lambda c: c.update(divergences=["js"]),
     "config key 'figures.representation.divergence': 'kl' is not one of divergences ['js'], so Figure 3"),
    (lambda c: c.update(divergences=[]),
     "config key 'divergences': methods ['dskd', 'dskd_cma', 'dskd_student_space', 'kd'] need at least one"),
])
def test_bad_config_names_the_key(config, mutate, expected):
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert expected in str(info.value)


def test_hub_id_models_are_allowed(config):
    """A model given by hub id replaces a built one: it passes the check, the workflow no longer builds it, and the
    cells load it by that id."""
    from repro import grid

    config["models"]["gpt2_teacher"] = {"id": "gpt2-xl"}
    assert validate_config(config) is config
    assert "gpt2_teacher" not in grid.built_models(config) and "gpt2_student" in grid.built_models(config)
    assert grid.model_source(config, "gpt2_teacher") == "gpt2-xl"


def test_load_config_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("results_dir: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


@pytest.mark.parametrize("text, expected", [
    ("results_dir: [unclosed\n", "bad.yaml, line 2, column 1: not valid YAML"),
    ("data:\n\tseed: 1\n", "bad.yaml, line 2, column 1: not valid YAML: found character '\\t' that cannot start any "
                           "token (YAML indents with spaces, never tabs)"),
    ("results_dir: a\nresults_dir: b\n", "bad.yaml, line 2, column 1: key 'results_dir' given twice (first at line "
                                         "1); YAML would keep only the last"),
    ("pairs:\n  gpt2: {table: 1}\n  gpt2: {table: 2}\n", "line 3, column 3: key 'gpt2' given twice"),
    ("training: {batch_size: 8, batch_size: 16}\n", "line 1, column 27: key 'batch_size' given twice"),
    ("", "bad.yaml: the file is empty; expected a mapping of config keys"),
    ("# only a comment\n", "the file is empty"),
    ("- a\n- b\n", "expected a mapping of config keys at the top level, got a list"),
    ("just text\n", "got a str"),
])
def test_yaml_problems_name_the_file_line_and_column(tmp_path, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_yaml(bad)
    assert expected in str(info.value)


def test_a_key_pasted_as_the_key_variable_name_is_never_echoed(config):
    secret = "sk-proj-Abc123-do-not-echo"
    config["figures"]["judge"]["api_key_env"] = secret
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert "config key 'figures.judge.api_key_env': expected the NAME of an environment variable" in str(info.value)
    assert secret not in str(info.value) and "Abc123" not in str(info.value)


def test_an_unusable_results_dir_is_named_before_anything_is_created(config, tmp_path, monkeypatch):
    from repro.config import results_dir_problem

    config["results_dir"] = "out/results"
    assert results_dir_problem(config, tmp_path) is None and not (tmp_path / "out").exists()
    (tmp_path / "out").write_text("a file where a folder should be")
    assert results_dir_problem(config, tmp_path) == (f"config key 'results_dir': {tmp_path / 'out/results'} cannot "
                                                     f"be created, {tmp_path / 'out'} is not a directory")
    (tmp_path / "out").unlink()
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as a read-only folder (root may write anywhere)
    assert f"{tmp_path / 'out/results'} cannot be created: {tmp_path} is not writable" in results_dir_problem(
        config, tmp_path)


def test_a_real_run_needs_loadable_models_and_the_data_folder(config, tmp_path, monkeypatch):
    from repro.config import run_problems

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_problems(config, tmp_path) == []  # built models and generated data need nothing
    (tmp_path / "local").mkdir()
    config["models"]["gpt2_teacher"] = {"id": "local"}  # a local folder is fine
    config["models"]["gpt2_student"] = {"id": "someone/not-cached"}
    config["data"] = {"source": "processed", "path": "data/dskd"}
    assert run_problems(config, tmp_path) == [
        "config key 'models.gpt2_student.id': 'someone/not-cached' is neither a local model folder nor in the "
        "Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; download it first (without "
        "HF_HUB_OFFLINE) or set the id to a local save_pretrained folder",
        "config key 'data.path': data/dskd is not a folder (expected the processed files: dolly/train.jsonl, "
        "dolly/dev.jsonl, ...; see config/README.md)"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the hub is asked when the job runs
    assert len(run_problems(config, tmp_path)) == 1


def test_non_finite_numbers_are_refused_by_key(config):
    config["training"]["kd_rate"] = float("nan")
    config["training"]["kd_temperature"] = float("inf")
    config["training"]["seeds"] = [10, float("-inf")]
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "config key 'training.kd_rate': expected a finite number, got NaN" in message
    assert "config key 'training.kd_temperature': expected a finite number, got inf" in message
    assert "config key 'training.seeds.1': expected a finite number, got -inf" in message


def test_workflow_modules_do_not_import_torch():
    """The Snakefile and its rules import these modules while building the DAG, which must not pay for torch (or
    transformers); every other module of the package imports what it needs at its top."""
    import subprocess
    import sys

    code = (f"import sys; import {', '.join('repro.' + m for m in DAG_MODULES)}; "
            "sys.exit(1 if any(m in sys.modules for m in ('torch', 'transformers')) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_every_schema_key_is_documented():
    """config/README.md explains every key the schema allows."""
    schema = load_yaml(REPO / "config" / "schema.yaml")
    readme = (REPO / "config" / "README.md").read_text()

    def keys(node):
        for alternative in node.get("oneOf", []):
            yield from keys(alternative)
        for name, sub in node.get("properties", {}).items():
            yield name
            yield from keys(sub)
        if isinstance(node.get("additionalProperties"), dict):
            yield from keys(node["additionalProperties"])

    missing = sorted({k for k in keys(schema) if k not in readme})
    assert missing == []


def test_schema_enums_are_the_names_of_the_registry():
    """The schema's enums of methods, divergences and test sets are the names of ``repro.names`` (the one table
    of names and traits), in its order; the divergences are those ``repro.losses`` implements, and every method
    class carries the traits of its registry entry."""
    from repro import names
    from repro.losses import DIVERGENCES
    from repro.methods import METHODS

    schema = load_yaml(REPO / "config" / "schema.yaml")
    props = schema["properties"]
    assert schema["$defs"]["method"]["enum"] == list(names.METHODS)
    assert props["divergences"]["items"]["enum"] == list(names.DIVERGENCES) == list(DIVERGENCES)
    figures = props["figures"]["properties"]
    assert figures["representation"]["properties"]["divergence"]["enum"] == list(names.DIVERGENCES)
    assert figures["judge"]["properties"]["test_set"]["enum"] == list(names.TEST_SETS)
    assert list(METHODS) == list(names.METHODS)
    for name, method in METHODS.items():
        traits = names.METHODS[name]
        assert type(method).__name__ == traits.implementation, name
        for flag in ("needs_teacher", "needs_divergence", "black_box", "cross_vocab"):
            assert getattr(method, flag) == getattr(traits, flag), (name, flag)


def test_a_new_registry_entry_is_a_method_everywhere(monkeypatch):
    """Adding a method is its class and one entry of ``repro.names.METHODS``: the grid's titles and
    its traits follow from the entry."""
    from repro import grid, names

    entry = names.Method("KD twice", "VanillaKD", needs_teacher=True, needs_divergence=True)
    monkeypatch.setitem(names.METHODS, "kd2", entry)
    cell = grid.Cell("gpt2", "kd2", divergence="js")
    assert cell.title == "KD twice (JS)" and cell.needs_teacher and cell.reads_teacher_states
    assert entry.same_vocab
    with pytest.raises(ValueError, match="unknown method 'kd3'.*'kd2'"):
        names.method("kd3")


@pytest.mark.parametrize("owner, section, key, bad", [
    ("repro.settings:JudgeSettings", "figures.judge", "temperature", 2.5),
    ("repro.settings:JudgeSettings", "figures.judge", "base_url", "localhost:8000"),
    ("repro.settings:ToySettings", "figures.toy", "n_classes", 1),
    ("repro.settings:PretrainSettings", "pretraining", "clip", 0.0),
])
def test_settings_classes_take_their_bounds_from_the_schema(config, owner, section, key, bad):
    """The settings classes that a config section fills (and that Python builds directly too) check their values
    against that section of the schema: the same value fails in both ways with the same line, and every field the
    config can set is a key of the section (the one owner of the bounds)."""
    import dataclasses
    import importlib

    from repro.schema import section_keys

    module, name = owner.split(":")
    cls = getattr(importlib.import_module(module), name)
    settable = {f.name for f in dataclasses.fields(cls)} & section_keys(section)
    assert settable and key in settable
    if section == "figures.judge":
        assert settable == {f.name for f in dataclasses.fields(cls)} == section_keys(section)
    target = config
    for part in section.split("."):
        target = target.setdefault(part, {})
    target[key] = bad
    with pytest.raises(ConfigError) as from_config:
        validate_config(config)
    with pytest.raises(ConfigError) as from_python:
        cls(**{key: bad})
    line = f"config key '{section}.{key}'"
    (expected,) = [ln.strip() for ln in str(from_config.value).splitlines() if line in ln]
    assert expected in str(from_python.value)


def test_fidelity_options_match_the_code():
    """The schema's choices of every option that switches between the official code and another behaviour are the
    ones the code accepts (``repro.names.CHOICES``), with the official value as the default everywhere."""
    import dataclasses

    from repro.methods import Context
    from repro.names import CHOICES
    from repro.settings import TrainSettings

    training = load_yaml(REPO / "config" / "schema.yaml")["properties"]["training"]["properties"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    context = Context(n_vocab=2, settings=TrainSettings(lr=1e-3, epochs=1))
    for name, allowed in CHOICES.items():
        assert training[name]["enum"] == list(allowed), name
        assert defaults[name] == getattr(context, name) == allowed[0], name
        for config_file in ("config.yaml", "micro.yaml", "paper.yaml"):
            assert load_yaml(REPO / "config" / config_file)["training"][name] == allowed[0], (config_file, name)
        with pytest.raises(ValueError, match=f"training.{name} must be one of"):
            TrainSettings(lr=1e-3, epochs=1, **{name: "other"})
        with pytest.raises(AttributeError, match=f"Context.{name} is the run's setting"):
            setattr(context, name, "other")


def test_the_old_single_training_seed_gets_a_hint():
    from repro.schema import ConfigError
    from repro.validation import load_config, validate_config

    config = load_config(REPO / "config" / "config.yaml")
    config["training"].pop("seeds")
    config["training"]["seed"] = 10
    with pytest.raises(ConfigError, match=r"'training.seed' was replaced by 'training.seeds', a list"):
        validate_config(config)


def test_training_defaults_are_the_settings_fields():
    """``repro.settings.training_value`` falls back to ``TrainSettings``' own defaults (the one place they are
    written), as fresh copies."""
    from repro.settings import TRAINING_DEFAULTS, TrainSettings, training_value

    settings = TrainSettings(lr=1e-3, epochs=1)
    assert TRAINING_DEFAULTS == {k: getattr(settings, k) for k in TRAINING_DEFAULTS}
    assert set(TRAINING_DEFAULTS) == set(settings.__dataclass_fields__) - {"lr", "epochs"}
    assert training_value({"processes": 4}, "processes") == 4 and training_value({}, "processes") == 1
    first = training_value({}, "dev_seeds")
    first.append(99)
    assert training_value({}, "dev_seeds") == [10]


@pytest.mark.parametrize("section", ["tokenizers", "models", "pairs"])
@pytest.mark.parametrize("name", ["..", ".", "...", "", "a/b", "/abs", "..\\up"])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(config, section, name):
    """Tokenizers, models and pairs name folders of the results: never only dots, empty, or a path."""
    config[section][name] = next(iter(config[section].values()))
    with pytest.raises(ConfigError, match=rf"config key '{section}': the name {re.escape(repr(name))} is not allowed: "
                                          r"a name is letters, digits, '_', '.' and '-', not only dots"):
        validate_config(config)


def test_ordinary_names_with_dots_are_kept(config):
    config["tokenizers"]["v1.5"] = config["tokenizers"]["gpt2"]
    config["models"][".hidden-2_b"] = config["models"]["gpt2_student"]
    validate_config(config)


def test_results_dir_lies_inside_the_working_directory_unless_allowed(config, tmp_path):
    from repro.config import results_dir_problem

    work = tmp_path / "work"
    work.mkdir()
    for value in ("..", ".", "../outside", "results/../../outside", str(tmp_path / "outside"), "/", "./"):
        config["results_dir"] = value
        assert results_dir_problem(config, work) == (
            f"config key 'results_dir': {value} is not a folder inside the working directory ({work}), where a run "
            f"may write and replace what it likes; name one inside it (relative, such as results), or set "
            f"results_outside_workdir: true to allow another place"), value
    for value in ("results", "./results", "runs/../results", str(work / "results")):
        config["results_dir"] = value
        assert results_dir_problem(config, work) is None, value
    config["results_dir"] = str(tmp_path / "outside")
    config["results_outside_workdir"] = True
    assert results_dir_problem(validate_config(config), work) is None
    config["results_dir"] = "results/{pair}"
    with pytest.raises(ConfigError, match=r"config key 'results_dir': the value 'results/\{pair\}' is not allowed: a "
                                          r"path may not hold '\{' or '\}'"):
        validate_config(config)


def test_yte_templating_is_refused_by_the_workflows_own_check(tmp_path):
    """Snakemake renders a YTE config (running its Python) before the Snakefile sees it: the check reads the file
    itself, so the rendered config, valid as it is, does not pass."""
    from repro.config import check_workflow_config

    path = tmp_path / "templated.yaml"
    micro = (REPO / "config" / "micro.yaml").read_text()
    path.write_text(micro.replace("results_dir: results\n", "__use_yte__: true\nresults_dir: ?\"res\" + \"ults\"\n"))
    rendered = load_yaml(REPO / "config" / "micro.yaml")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: config key '__use_yte__': YTE templating is not "
                                          r"supported"):
        check_workflow_config(rendered, [path])


def test_a_model_id_that_is_neither_a_folder_nor_a_hub_id_is_named_in_one_line(config, tmp_path, monkeypatch):
    from repro.config import id_problems, run_problems

    (tmp_path / "local").mkdir()
    (tmp_path / "weights.bin").write_text("")
    config["models"]["gpt2_teacher"] = {"id": str(tmp_path / "modles" / "gpt2-xl")}  # a mistyped absolute path
    config["models"]["gpt2_student"] = {"id": "local"}
    config["models"]["qwen_teacher"] = {"id": "Qwen/Qwen1.5-1.8B"}
    config["models"]["llama2_teacher"] = {"id": "weights.bin"}  # a file: a valid hub id, looked for on the hub
    config["models"]["mistral_teacher"] = {"id": "./weights.bin"}
    assert id_problems(config, tmp_path) == [
        f"config key 'models.gpt2_teacher.id': '{tmp_path}/modles/gpt2-xl' is neither a local folder (no such local "
        f"path) nor a valid Hugging Face hub id (name or owner/name: letters, digits, '-', '_' and '.')",
        f"config key 'models.mistral_teacher.id': './weights.bin' is neither a local folder ({tmp_path}/weights.bin "
        f"is a file) nor a valid Hugging Face hub id (name or owner/name: letters, digits, '-', '_' and '.')"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert all("modles" not in p for p in run_problems(config, tmp_path))  # no HFValidationError, no second line


def test_a_study_names_plain_conditions_and_keeps_its_results_inside(tmp_path, monkeypatch):
    from repro.config import check_workflow_config

    monkeypatch.chdir(REPO)
    study = load_yaml(REPO / "config" / "study.yaml")
    study["study"]["conditions"] = {"..": {}}
    with pytest.raises(ConfigError, match=r"config key 'study.conditions': the name '..' is not allowed"):
        check_workflow_config(study, [])
    study["study"]["conditions"] = {"base": {}}
    study["study"]["results_dir"] = str(tmp_path)
    with pytest.raises(ConfigError, match=rf"config key 'study.results_dir': {tmp_path} is not a folder inside"):
        check_workflow_config(study, [])
