"""`python -m analysis fit / fit-2d` and `run_fit`: files, tables, exit codes, smoke sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import (
    Columns,
    Fit2DOptions,
    FitOptions,
    FitReport,
    InputError,
    PointColumns,
    run_fit,
)
from analysis.cli import build_parser, fit_2d_options, fit_options, main

ROOT = Path(__file__).resolve().parents[2]
FITS_COLUMNS = ["group", "E", "A", "alpha", "E_lo", "E_hi", "A_lo", "A_hi", "alpha_lo", "alpha_hi"]
MULTIPLIER_COLUMNS = ["group", "baseline", "n", "k", "k_lo", "k_hi", "extrapolated"]


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_fit_writes_the_tables_other_tools_read_and_the_plots(sweep_dir, capsys):
    out = sweep_dir / "fit"
    assert main(["fit", str(sweep_dir / "results.csv"), "--out", str(out), "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Power-law fits" in printed and "Efficiency multipliers vs sft_teacher" in printed
    fits = pd.read_csv(out / "fits.csv")
    assert list(fits.columns[:10]) == FITS_COLUMNS
    assert sorted(fits["group"]) == ["dpo_negative", "dpo_per_step", "rft_self", "sft_teacher"]
    assert (fits["alpha_lo"] < fits["alpha"]).all() and (fits["alpha"] < fits["alpha_hi"]).all()
    assert set(fits["bootstrap"]) == {"seeds + test problems"}  # per_problem.csv found beside
    mult = pd.read_csv(out / "multipliers.csv")
    assert set(MULTIPLIER_COLUMNS) <= set(mult.columns)
    assert set(mult["baseline"]) == {"sft_teacher"} and "sft_teacher" not in set(mult["group"])
    assert mult["extrapolated"].dtype == bool
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["group"]) == {"dpo_negative", "dpo_per_step", "rft_self"}
    assert "Paired differences vs sft_teacher" in printed and "Extrapolation backtest" in printed
    held_out = pd.read_csv(out / "backtest.csv")
    assert sorted(held_out["group"]) == sorted(fits["group"]) and (held_out["held_n"] == 3200).all()
    for name in ("curves.png", "multipliers.png", "paired.png", "curves_train_tokens.png",
                 "curves_device_seconds.png"):
        assert _png_ok(out / name), name
    assert (out / "fits_device_seconds.csv").exists() and (out / "report.txt").exists()


def test_flags_map_onto_the_options_and_their_defaults_are_the_options_defaults():
    parse = build_parser().parse_args
    assert fit_options(parse(["fit", "r.csv", "--out", "o"])) == FitOptions()
    assert fit_2d_options(parse(["fit-2d", "p.csv", "--out", "o"])) == Fit2DOptions()
    args = parse(["fit", "r.csv", "--out", "o", "--size-col", "examples", "--baseline", "b",
                  "--form", "pure", "--huber-delta", "0.05", "--n-boot", "7", "--level", "0.9",
                  "--seed", "3", "--cost-cols", "train_tokens,"])
    assert fit_options(args) == FitOptions(
        baseline="b", columns=Columns(size="examples"), form="pure", delta=0.05, n_boot=7,
        level=0.9, seed=3, cost_cols=("train_tokens",))
    args = parse(["fit-2d", "p.csv", "--out", "o", "--d-col", "tokens", "--loss-col", "nll",
                  "--drop-highest-loss", "5", "--n-boot", "0"])
    assert fit_2d_options(args) == Fit2DOptions(
        columns=PointColumns(d="tokens", loss="nll"), drop_highest=5, n_boot=0)
    assert fit_options(parse(["fit", "r.csv", "--out", "o", "--cost-cols", ""])).cost_cols == ()


def test_python_dash_m_entry_point_and_bad_input_exit_2(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_text("data_type,n,test_error\nsft_teacher,100,0.5\nsft_teacher,1e3,oops\n")
    proc = subprocess.run([sys.executable, "-m", "analysis", "fit", str(bad), "--out",
                           str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: column 'test_error', line 3: expected a number, got 'oops'"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--size-col", "examples"], "missing column 'examples'"),
    (["--level", "95"], "--level: expected a number between 0 and 1, got 95"),
    (["--baseline", "sft_human"], "baseline 'sft_human' is not a group in column 'data_type'"),
])
def test_bad_options_exit_2_with_one_line(sweep_dir, capsys, args, fragment):
    code = main(["fit", str(sweep_dir / "results.csv"), "--out", str(sweep_dir / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def _smoke(tmp_path, sizes) -> Path:
    rows = [{"experiment": "smoke", "data_type": t, "n": n, "seed": s,
             "test_error": 0.6 * n ** -0.2 * (1.1 if t == "sft_teacher" else 1) + 0.01 * s}
            for t in ("sft_teacher", "rft_self") for n in sizes for s in (0, 1)]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_two_size_smoke_sweep_warns_and_still_writes(tmp_path, capsys):
    path = _smoke(tmp_path, [8, 16])
    assert main(["fit", str(path), "--out", str(tmp_path / "fit"), "--n-boot", "100"]) == 0
    printed = capsys.readouterr().out
    assert "only 2 sizes; fitted the pure law" in printed
    fits = pd.read_csv(tmp_path / "fit" / "fits.csv")
    assert set(fits["form"]) == {"pure"} and fits["alpha"].notna().all()
    assert _png_ok(tmp_path / "fit" / "curves.png")


def test_a_one_size_sweep_fits_nothing_but_exits_0(tmp_path):
    report = run_fit(_smoke(tmp_path, [8]), tmp_path / "fit", FitOptions(n_boot=50))
    assert isinstance(report, FitReport)
    assert report.fits["alpha"].isna().all()
    assert any("needs at least 2" in w for w in report.warnings)
    assert any("could not be fitted" in w for w in report.warnings)
    assert report.multipliers.empty and (tmp_path / "fit" / "multipliers.csv").exists()


def test_run_fit_returns_what_the_sweep_logs(sweep_dir):
    report = run_fit(sweep_dir / "results.csv", sweep_dir / "fit", FitOptions(n_boot=100),
                     per_problem=False)
    assert set(report.fits["bootstrap"]) == {"seeds"}
    assert all(Path(p).is_file() for p in report.files)
    names = {Path(p).name for p in report.files}
    assert {"fits.csv", "multipliers.csv", "curves.png", "multipliers.png"} <= names
    metrics = report.metrics()
    assert "dpo_per_step.alpha" in metrics and "dpo_per_step.k_at_max_n" in metrics
    assert all(np.isfinite(v) for v in metrics.values())


def test_other_column_names_reach_tables_plots_and_errors(sweep_dir):
    """Column names come from FitOptions.columns alone: the results and per-problem CSVs
    are read with them, the fits' axis is named after the size column, and an unknown
    baseline names the user's group column."""
    names = {"data_type": "model", "n": "examples", "test_error": "loss", "seed": "run"}
    pd.read_csv(sweep_dir / "results.csv").rename(columns=names).to_csv(
        sweep_dir / "results.csv", index=False)
    pd.read_csv(sweep_dir / "per_problem.csv").rename(columns=names).to_csv(
        sweep_dir / "per_problem.csv", index=False)
    columns = Columns(group="model", size="examples", error="loss", seed="run")
    report = run_fit(sweep_dir / "results.csv", sweep_dir / "fit",
                     FitOptions(columns=columns, n_boot=50, cost_cols=()), plots=False)
    assert set(report.fits["axis"]) == {"examples"}
    assert set(report.fits["bootstrap"]) == {"seeds + test problems"}
    assert pd.read_csv(sweep_dir / "fit" / "fits.csv")["axis"].tolist() == ["examples"] * 4
    assert report.against_compute == {}
    with pytest.raises(InputError, match="baseline 'human' is not a group in column 'model'"):
        run_fit(sweep_dir / "results.csv", sweep_dir / "fit",
                FitOptions(columns=columns, baseline="human"))


def test_the_package_imports_no_mlflow_ray_torch_or_orchestrator():
    """The sweep imports analysis, never the other way round (nor its heavy dependencies)."""
    code = ("import sys, analysis, analysis.cli, analysis.report; print(sorted(m for m in "
            "sys.modules if m.split('.')[0] in ('mlflow', 'ray', 'torch', 'orchestrator')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_fit_2d_on_epochs_points_writes_json_and_plot(shared_data, tmp_path, capsys):
    points = shared_data / "chinchilla_epoch" / "svg_extracted_data.csv"
    code = main(["fit-2d", str(points), "--out", str(tmp_path), "--drop-highest-loss", "5",
                 "--n-boot", "200"])
    assert code == 0
    result = json.loads((tmp_path / "fit_2d.json").read_text())
    assert {"E", "A", "B", "alpha", "beta", "E_lo", "beta_hi"} <= set(result)
    assert result["n_points"] == 240 and result["alpha"] == pytest.approx(0.3473, abs=1e-3)
    assert result["alpha_lo"] < result["alpha"] < result["alpha_hi"]
    assert _png_ok(tmp_path / "fit_2d.png")
    assert "240 points (5 highest-loss dropped)" in capsys.readouterr().out


def test_fit_2d_with_token_column_and_bad_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n, d = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5)))
    loss = (1.7 + 400 / n ** 0.34 + 1500 / d ** 0.3) * np.exp(rng.normal(0, 0.01, n.size))
    pd.DataFrame({"params": n, "tokens": d, "val_loss": loss}).to_csv(tmp_path / "p.csv",
                                                                        index=False)
    args = ["fit-2d", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o"), "--n-col", "params",
            "--d-col", "tokens", "--n-boot", "50", "--no-plots"]
    assert main([*args, "--loss-col", "val_loss"]) == 0
    assert json.loads((tmp_path / "o" / "fit_2d.json").read_text())["n_points"] == 25
    assert main([*args, "--loss-col", "loss"]) == 2
    assert "missing column 'loss'" in capsys.readouterr().err


def test_several_results_files_are_variants_overlaid_in_one_fit(tmp_path, make_sweep, capsys):
    """runs/base and runs/base,twice (its teacher data worth twice as much): one fit, groups
    named <folder>:<data_type>, multipliers against the first folder's baseline, which
    find the known factor 2 between the variants; each variant's per_problem.csv is used."""
    folders = []
    for name, k, seed in (("base", 1.0, 1), ("base,twice", 2.0, 2)):
        results, per_problem = make_sweep(np.random.default_rng(seed), n_problems=400,
                                          true_k={"sft_teacher": k})
        folder = tmp_path / name
        folder.mkdir()
        results.to_csv(folder / "results.csv", index=False)
        per_problem.to_csv(folder / "per_problem.csv", index=False)
        folders.append(folder)
    out = tmp_path / "fit"
    assert main(["fit", *(str(f / "results.csv") for f in folders), "--out", str(out),
                 "--n-boot", "200"]) == 0
    assert "vs base:sft_teacher" in capsys.readouterr().out
    fits = pd.read_csv(out / "fits.csv")
    assert sorted(fits["group"]) == ["base,twice:sft_teacher", "base:sft_teacher"]
    assert set(fits["bootstrap"]) == {"seeds + test problems"}
    mult = pd.read_csv(out / "multipliers.csv")
    assert set(mult["baseline"]) == {"base:sft_teacher"}
    inside = mult[~mult["extrapolated"]]
    assert len(inside) and ((inside["k_lo"] < 2.0) & (2.0 < inside["k_hi"])).all(), inside
    assert _png_ok(out / "curves.png")
    # one per_problem file cannot stand for several results files
    code = main(["fit", *(str(f / "results.csv") for f in folders), "--out", str(out),
                 "--per-problem", str(folders[0] / "per_problem.csv")])
    assert code == 2 and "--per-problem names one file" in capsys.readouterr().err
