"""mkdocs hook: makes the tutorial's figures (docs/make_figures.py) when any is missing, so that
``mkdocs build --strict`` works from a fresh clone (the PNGs are not committed)."""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path


def _outputs(script: Path) -> tuple[str, ...]:
    """``OUTPUTS`` of the script, read without importing it (that would import torch)."""
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OUTPUTS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{script} defines no OUTPUTS")


def on_pre_build(config, **kwargs) -> None:
    docs = Path(config["docs_dir"])
    script, out = docs / "make_figures.py", docs / "figures"
    if all((out / name).is_file() for name in _outputs(script)):
        return
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:  # pde2net itself, when it is not installed
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location("pde2net_make_figures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(out)
