"""notebooks/shadow_run.ipynb: stored without outputs, no logic of its own, runs top to bottom on a demo run."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from demo_run import demo_run
from steps import analyst

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "shadow_run.ipynb"


def _code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert [(c.outputs, c.execution_count) for c in _code_cells(notebook)] == [([], None)] * len(_code_cells(notebook))


def test_the_notebook_defines_no_logic():
    """No functions, classes or SQL of its own: it calls steps.analyst."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(cell.source for cell in _code_cells(notebook))
    tree = ast.parse(source)
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
    assert "select " not in source.lower()
    called = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and isinstance(n.func.value, ast.Name) and n.func.value.id == "analyst"}
    assert called == {"open_tables", "pick_run", "accounting", "quarantine", "flip_matrix", "label_flips",
                      "score_summary", "score_histogram", "metrics", "trend", "slices", "verdict"}


def test_the_notebook_tells_the_story_of_a_demo_run(monkeypatch):
    from nbclient import NotebookClient

    run = demo_run()
    monkeypatch.setenv("SHADOW_EVAL_WORKSPACE", str(run.workspace))
    monkeypatch.delenv("SHADOW_EVAL_CONFIG", raising=False)
    monkeypatch.delenv("SHADOW_EVAL_RUN_ID", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
    outputs = [o for cell in _code_cells(notebook) for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert run.outcome.run_id in text
    assert f"{run.outcome.decision} (" in text  # the verdict line, from evaluation.json
    assert "production \\ candidate" in text  # the flip matrix


def test_the_analyst_functions_agree_with_the_run():
    run = demo_run()
    tables = analyst.open_tables(run.workspace)
    chosen = analyst.pick_run(tables)
    assert chosen["run_id"] == run.outcome.run_id
    accounting = analyst.accounting(tables, chosen).iloc[0]
    assert (accounting["captured"], accounting["joined"], bool(accounting["balanced"])) == (
        run.outcome.accounting.captured, run.outcome.accounting.joined, True)
    matrix = analyst.flip_matrix(tables, chosen)
    assert int(matrix.to_numpy().sum()) == run.outcome.accounting.joined
    flipped = int(matrix.to_numpy().sum() - matrix.to_numpy().trace())
    assert len(analyst.label_flips(tables, chosen, limit=10_000)) == flipped
    assert int(analyst.score_histogram(tables, chosen)["candidate"].sum()) == run.outcome.accounting.joined
    verdict = analyst.verdict(chosen)
    assert verdict["decision"] == run.outcome.decision and verdict["reasons"] and not verdict["checks"].empty
    with pytest.raises(LookupError, match="no run 'nope'"):
        analyst.pick_run(tables, "nope")
