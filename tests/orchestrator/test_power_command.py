"""`synthscale power CONFIG --pilot RESULTS.csv`: the config's grid, the pilot's curve and
spread, one table; bad input is one line and exit 2."""

from __future__ import annotations

from orchestrator.cli import EXIT_BAD_INPUT, main

from ..conftest import ROOT

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
GRID = ["grid.sizes=[100,400,1600]", "grid.seeds=[0,1]", "grid.data_types=[sft_teacher,rft_self]",
        "task.n_train=1600"]


def write_pilot(path, n_test=300):
    rows = ["data_type,n,seed,test_error,n_test"] + [
        f"{t},{n},{s},{0.1 + 3.0 * n ** -0.5:.6f},{n_test}"
        for t in ("sft_teacher", "rft_self") for n in (100, 400, 1600) for s in (0, 1)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_power_prints_the_grids_table(tmp_path, capsys):
    # No seed spread and 20,000 test problems: the smallest effect tried is detected.
    code = main(["power", SMOKE, *GRID, "task.n_test=20000", "--pilot",
                 str(write_pilot(tmp_path / "results.csv")), "--sims", "4", "--n-boot", "50"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("rft_self")]
    assert [int(r[1]) for r in rows] == [100, 400, 1600]
    assert all(r[-2] == "1.25" and r[-1] == "0.005" for r in rows), out
    assert "sizes [100, 400, 1600], 2 seed(s), n_test 20000" in out


def test_a_missing_or_bad_pilot_is_exit_2(tmp_path, capsys):
    assert main(["power", SMOKE, *GRID, "--pilot", str(tmp_path / "none.csv")]) == EXIT_BAD_INPUT
    (tmp_path / "bad.csv").write_text("data_type,n,seed,test_error,n_test\nrft_self,100,0,0.5,40\n")
    assert main(["power", SMOKE, *GRID, "--pilot", str(tmp_path / "bad.csv")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "sft_teacher" in err
