"""Reading inputs: one-line errors naming file, column and line; MLflow runs as results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.tables import (
    Columns,
    InputError,
    PointColumns,
    drop_zero_errors,
    load_per_problem,
    load_points_2d,
    load_results,
    results_from_mlflow_runs,
    standardize,
)

GOOD = "experiment,data_type,n,seed,test_error\nx,sft_teacher,100,0,0.5\nx,sft_teacher,200,0,0.4\n"


def _write(tmp_path, text, name="results.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_results_are_standardised_with_their_other_columns_kept(tmp_path):
    frame = load_results(_write(tmp_path, GOOD))
    assert list(frame.columns[:5]) == ["group", "size", "error", "seed", "cell_size"]
    assert frame["size"].tolist() == frame["cell_size"].tolist() == [100.0, 200.0]
    assert frame["error"].tolist() == [0.5, 0.4]
    assert frame["experiment"].tolist() == ["x", "x"]
    assert list(frame.index) == [0, 1]


@pytest.mark.parametrize(("text", "message"), [
    ("data_type,n,test_error\nsft,100,0.5\nsft,abc,0.4\n",
     "results.csv: column 'n', line 3: expected a number, got 'abc'"),
    ("data_type,n,test_error\nsft,100,0.5\nsft,0,0.4\n",
     "results.csv: column 'n', line 3: expected a value > 0, got 0"),
    ("data_type,n,test_error\nsft,100,-0.1\n",
     "results.csv: column 'test_error', line 2: expected a value >= 0, got -0.1"),
    ("data_type,n,test_error\nsft,100,\n",
     "results.csv: column 'test_error', line 2: expected a number, got an empty cell"),
    ("data_type,n,err\nsft,100,0.5\n",
     "results.csv: missing column 'test_error' (has: data_type, n, err)"),
])
def test_bad_results_name_file_column_and_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_results(path)
    assert str(info.value) == f"{tmp_path}/{message}"
    assert "\n" not in str(info.value)


def test_bad_in_memory_frames_name_the_row_label_not_a_csv_line():
    frame = pd.DataFrame({"data_type": ["a", "a"], "n": [1.0, "x"], "test_error": [0.1, 0.2]},
                         index=[10, 11])
    with pytest.raises(InputError) as info:
        standardize(frame, source="my frame")
    assert str(info.value) == "my frame: column 'n', row 11: expected a number, got 'x'"


def test_missing_and_empty_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_results(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="not a readable CSV|no data rows"):
        load_results(_write(tmp_path, ""))


def test_other_peoples_column_names_and_no_seed_column(tmp_path):
    path = _write(tmp_path, "model,examples,loss\na,10,1.0\na,10,1.1\na,20,0.9\n")
    frame = load_results(path, Columns(group="model", size="examples", error="loss"))
    assert frame["seed"].tolist() == [0, 1, 0]  # replicates within a cell count as seeds
    assert frame["size"].tolist() == [10.0, 10.0, 20.0]
    assert frame["error"].tolist() == [1.0, 1.1, 0.9]


def test_zero_errors_are_dropped_with_a_warning():
    frame = standardize(pd.DataFrame({"data_type": "a", "n": [1.0, 2.0], "test_error": [0.0, 0.1]}))
    kept, warnings = drop_zero_errors(frame)
    assert len(kept) == 1 and "a n=1" in warnings[0]


def test_per_problem_correct_must_be_binary(tmp_path):
    path = _write(tmp_path, "data_type,n,seed,problem_id,correct\nsft,100,0,q1,1\nsft,100,0,q2,2\n",
                  "per_problem.csv")
    with pytest.raises(InputError, match=r"column 'correct', line 3: expected 0 or 1, got 2"):
        load_per_problem(path)


def test_points_2d_from_flop_or_tokens(tmp_path):
    path = _write(tmp_path, "Model Size,Training FLOP,loss,tok\n1e8,6e18,3.0,1e10\n", "p.csv")
    assert load_points_2d(path)["D"].iloc[0] == pytest.approx(1e10)
    assert load_points_2d(path, PointColumns(d="tok"))["D"].iloc[0] == pytest.approx(1e10)
    with pytest.raises(InputError, match="missing column 'N'"):
        load_points_2d(path, PointColumns(n="N"))


def _log_evaluations(uri: str) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("demo")
    for data_type, n, seed, err in [("sft_teacher", 100, 0, 0.5), ("sft_teacher", 200, 0, 0.4),
                                    ("rft_self", 100, 0, 0.45)]:
        run = client.create_run(experiment, tags={"stage": "evaluate", "data_type": data_type,
                                                  "n": str(n), "seed": str(seed),
                                                  "synthscale_kind": "stage"})
        client.log_metric(run.info.run_id, "test_error", err)
    client.create_run(experiment, tags={"stage": "sft", "data_type": "sft_teacher", "n": "100",
                                        "seed": "0"})
    # an earlier attempt of an evaluation that raised: history, not a result
    client.create_run(experiment, tags={"stage": "evaluate", "data_type": "rft_self", "n": "100",
                                        "seed": "0", "synthscale_kind": "failure"})


@pytest.mark.slow
def test_results_from_real_mlflow_runs(tmp_path):
    """Runs logged the way orchestrator/tracking.py logs them, read back with mlflow."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _log_evaluations(uri)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["demo"])
    results = results_from_mlflow_runs(runs)
    assert sorted(results.columns[:3]) == ["data_type", "n", "seed"]
    assert len(results) == 3  # the sft stage run is not an evaluation
    frame = standardize(results)
    row = frame[(frame["group"] == "sft_teacher") & (frame["size"] == 200)]
    assert np.isclose(row["error"].iloc[0], 0.4)
