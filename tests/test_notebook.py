"""docs/api.ipynb runs as written: its code cells, in order, from docs/ (where Jupyter starts it), with the cell
tagged "parameters" followed by a few training steps (papermill's convention)."""
import json
from pathlib import Path

NOTEBOOK = Path(__file__).parents[1] / "docs" / "api.ipynb"


def test_the_api_notebook_runs(tmp_path, monkeypatch, capsys):
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] for c in cells)  # kept without outputs: nothing stale to read
    monkeypatch.chdir(NOTEBOOK.parent)
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}:{cell['id']}", "exec"), namespace)
        if "parameters" in cell["metadata"].get("tags", []):
            namespace.update(RUN=str(tmp_path / "run"), OVERRIDES=["train.steps=4", "train.sample_every=0"])
    assert namespace["run"] == tmp_path / "run" and (tmp_path / "run" / "checkpoints" / "step-000004").is_dir()
    assert [(im.mode, im.size) for im in namespace["images"]] == [("L", (16, 16))] * 2
    assert namespace["x"].shape == (80, 1, 16, 16)
    assert namespace["grid"].size == (2 + 8 * (4 * 16 + 2), 2 + 10 * (4 * 16 + 2))
    assert "this model is not text-conditioned" in capsys.readouterr().out
