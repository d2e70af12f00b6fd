"""analysis/scaling_curves.ipynb runs top to bottom on a small sweep (nbclient, real kernel)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "analysis" / "scaling_curves.ipynb"


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if kind in o.get("data", {})]


@pytest.mark.slow
def test_notebook_executes_on_a_small_results_file(sweep_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    out = tmp_path / "nb_fit"
    monkeypatch.setenv("RESULTS_CSV", str(sweep_dir / "results.csv"))
    monkeypatch.setenv("N_BOOT", "100")
    monkeypatch.setenv("FIT_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "RESULTS_CSV" in nb.cells[1].source  # the first code cell holds the parameters
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    tables = "\n".join(o["data"]["text/html"] for o in _outputs(nb, "text/html"))
    assert "dpo_per_step" in tables and "alpha_lo" in tables and "extrapolated" in tables
    assert len(_outputs(nb, "image/png")) >= 3  # curves, multipliers, one per cost axis
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits["bootstrap"]) == {"seeds + test problems"}
    assert (out / "curves.png").stat().st_size > 20_000
