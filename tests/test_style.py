"""Code style is checked, not hoped for: ruff (pyflakes, pycodestyle, import order) passes on the whole project."""
import subprocess
import sys

from conftest import DAG_MODULES, REPO


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "repro", "tests", "notebooks", "scripts"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_repro_layout_spells_the_run_folder_layout():
    """The names inside a run's folder and the results folder's file names (repro.layout) are written in no other
    module's code, rule or notebook (the docs may name them; a notebook's parameters cell holds example defaults): a
    rename is one edit."""
    import ast
    import re

    from repro import layout

    names = [layout.TRAIN_SUMMARY, layout.SCORES, layout.TRAIN_LOG, layout.SEQKD_TARGETS, layout.RESUME_STATE,
             layout.STATES, layout.STATES_INFO, layout.PRETRAINING_CORPUS]
    spelled = re.compile("(?<![a-z_])(" + "|".join(re.escape(n) for n in names) + ")"
                         r'|^(train|evaluate)\.(html|ipynb)$|_seed\{seed\}\.jsonl|/runs/'
                         r'|^/ (model|adapter|generations)$|/(model|adapter|generations|resume)/')

    def code_strings(path):
        """(line, text) of every string literal that is not a docstring (f-strings as written)."""
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".smk" or path.name == "Snakefile":  # not Python: its string literals by pattern
            return [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1)
                    for m in re.finditer(r'f?"[^"]*"', line.split("#", 1)[0])]
        tree = ast.parse(text)
        docs = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        parameters = set()
        if path.parent.name == "notebooks":  # the parameters cell: example defaults for a reader
            lines = text.splitlines()
            start = next(i for i, line in enumerate(lines) if 'tags=["parameters"]' in line)
            end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("# %%"))
            parameters = set(range(start + 1, end + 1))
        out = [(node.lineno, f"/ {node.right.value}") for node in ast.walk(tree)  # a folder joined to a path
               if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
               and isinstance(node.right.value, str)]
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)
                                                   and id(node) not in docs):
                if node.lineno not in parameters:
                    out.append((node.lineno, ast.get_source_segment(text, node) or ""))
        return out

    files = [p for d in ("repro", "rules", "notebooks") for p in (REPO / d).rglob("*") if p.suffix in (".py", ".smk")]
    offenders = [f"{path.relative_to(REPO)}:{n}: {literal}" for path in files + [REPO / "Snakefile"]
                 if path.name != "layout.py" for n, literal in code_strings(path)
                 if spelled.search(literal.strip("f\"'"))]
    assert offenders == []


def test_the_documentations_how_to_names_what_exists():
    """Every module, symbol, file and test that the "How to add ..." section of the documentation (README.md and
    docs/*.md) names exists, so its steps stay true when code moves."""
    import importlib
    import re

    heading = "## How to add a method, a divergence, a model pair or a figure"
    holders = [p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]]
    holders = [text for text in holders if heading in text]
    assert len(holders) == 1, f"{heading!r} is in {len(holders)} documents, expected one"
    section = holders[0].split(heading, 1)[1].split("\n## ", 1)[0]
    quoted = re.findall(r"`([^`]+)`", section)
    symbols = [q for q in quoted if re.fullmatch(r"repro(\.\w+)+", q)]
    path = r"(repro|tests|config|rules|notebooks)/[\w/.]+(::\w+)?"
    files = [q.split("::")[0] for q in quoted if re.fullmatch(path, q)]
    tests = [q.split("::") for q in quoted if "::" in q]
    assert len(symbols) >= 8 and len(files) >= 8 and tests, (symbols, files, tests)
    for symbol in symbols:
        parts = symbol.split(".")
        for split in range(len(parts), 1, -1):  # the longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[split:]:
                assert hasattr(obj, attribute), symbol
                obj = getattr(obj, attribute)
            break
        else:
            raise AssertionError(f"{symbol}: no such module")
    for name in files:
        assert (REPO / name).exists() or "figureN" in name, name
    for path, function in tests:
        assert f"def {function}(" in (REPO / path).read_text(encoding="utf-8"), (path, function)



# Third-party packages that take a noticeable part of a second to import (or bring torch): a module that the
# workflow imports while it builds the DAG imports them inside the function that needs them (`snakemake -n` and
# `python -m repro.config` stay fast).
HEAVY_PACKAGES = {"torch", "transformers", "datasets", "peft", "accelerate", "pandas", "matplotlib", "seaborn",
                  "openai", "tqdm", "nbconvert", "nbformat", "jupytext", "rouge_score", "nltk"}


def _package_imports():
    """For every module of the package, ``repro.X``: what it imports at module level (``repro.Y`` or a package's
    dotted name) and every import inside a function as ``(line, target)``."""
    import ast

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level:  # from . import x, from .x import y
            return [f"repro.{node.module}"] if node.module else [f"repro.{a.name}" for a in node.names]
        return [node.module]

    top, inner = {}, {}
    for path in sorted((REPO / "repro").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                   and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        module = f"repro.{path.stem}"
        top[module] = {t for n in imports if id(n) not in nested for t in targets(n)}
        inner[module] = [(n.lineno, t) for n in imports if id(n) in nested for t in targets(n)]
    return top, inner


def _loads(start, top) -> set[str]:
    """Every module that importing ``start`` loads, following the package's module-level imports."""
    seen, todo = set(), list(start)
    while todo:
        if (name := todo.pop()) not in seen:
            seen.add(name)
            todo.extend(top.get(name, ()))
    return seen


def test_imports_sit_at_the_top_unless_they_defer_a_heavy_package_or_break_a_cycle():
    """An import inside a function is allowed only where it (a) keeps a heavy package (HEAVY_PACKAGES, or a module
    of ours that loads one) out of a module the DAG build imports (conftest.DAG_MODULES and what they load), or
    (b) breaks an import cycle (the target loads the importing module). Everything else, the standard library
    above all, is imported at the module's top."""
    import re

    top, inner = _package_imports()
    workflow = set()
    for path in [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if m := re.match(r"from repro import ([\w, ]+)", line):
                workflow |= {name.strip() for name in m.group(1).split(",")}
            elif m := re.match(r"from repro\.(\w+) import ", line):
                workflow.add(m.group(1))
    assert "config" in workflow and workflow <= set(DAG_MODULES), workflow  # the list is the workflow's
    dag = {m for m in _loads([f"repro.{m}" for m in DAG_MODULES], top) if m.startswith("repro.")}

    def heavy(target):
        return any(name.split(".")[0] in HEAVY_PACKAGES for name in _loads([target], top))

    offenders = [f"{module}:{line} imports {target} inside a function"
                 for module, imports in inner.items() for line, target in imports
                 if not (module in dag and heavy(target)) and module not in _loads([target], top)]
    assert offenders == []


def test_a_training_default_is_written_only_in_train_settings():
    """A training key's default lives in ``repro.settings.TrainSettings``: no module, rule or notebook reads a key
    of the training block with a default of its own (``training.get("processes", 1)``); they call
    ``repro.settings.training_value`` (or build the settings). Not checked: ``seed`` (also a model's key) and the
    divergence options ``skew`` and ``threshold`` (the loss functions' own keyword defaults)."""
    import re
    from dataclasses import fields

    from repro.settings import TrainSettings

    keys = "|".join(f.name for f in fields(TrainSettings) if f.name not in ("seed", "skew"))
    pattern = re.compile(rf"""\.(get|pop)\(\s*["']({keys})["']\s*,(?!\s*None\))""")  # pop(key, None) drops a key
    files = [p for d in ("repro", "rules", "notebooks") for p in (REPO / d).rglob("*") if p.suffix in (".py", ".smk")]
    offenders = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in files + [REPO / "Snakefile"]
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


# The torch-free bottom layer: every other module may import these, and they import only each other (and no heavy
# package): the config's schema and reading, every settings class with its defaults, the names, the run folder's
# layout, the verdicts' words, the atomic writes.
BOTTOM = ("repro.schema", "repro.settings", "repro.names", "repro.layout", "repro.verdicts", "repro.io")


def _edges():
    """Every import of one package module by another, at the top or inside a function: ``{module: {target}}``."""
    top, inner = _package_imports()
    modules = set(top)
    return {m: {t for t in top[m] | {t for _, t in inner[m]} if t in modules and t != m} for m in modules}


def _cycle(edges) -> list[str] | None:
    """One import circle of ``edges`` (its modules in order, the first again at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle():
    """No module of the package imports, at its top or inside a function, one that imports it back (directly or
    through others): the modules form layers, and no import runs upward."""
    assert _cycle(_edges()) is None, " -> ".join(_cycle(_edges()))


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_bottom_layer_imports_only_itself_and_no_heavy_package():
    """The bottom layer (``BOTTOM``: schema, settings, names, layout, verdicts, io) imports no other module of the
    package and none of the heavy packages, at its top or inside a function."""
    top, inner = _package_imports()
    offenders = {m: sorted(t for t in top[m] | {t for _, t in inner[m]}
                           if (t.startswith("repro.") and t not in BOTTOM) or t.split(".")[0] in HEAVY_PACKAGES)
                 for m in BOTTOM}
    assert {m: found for m, found in offenders.items() if found} == {}
