"""Where a sweep's MLflow store is: tracking.uri, else MLFLOW_TRACKING_URI, else sqlite
under the output folder (issue 14: MLflow's own variable is honoured, as RAY_ADDRESS is)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import config_from_dict

SERVER = "http://127.0.0.1:5999"


def test_default_is_sqlite_under_the_output_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = config_from_dict({"experiment": {"name": "x", "output_dir": str(tmp_path / "out")}})
    assert config.tracking_uri == f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"


def test_environment_variable_is_used_when_the_config_names_no_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    assert config_from_dict({}).tracking_uri == SERVER


def test_the_config_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    config = config_from_dict({"tracking": {"uri": "sqlite:///elsewhere.db"}})
    assert config.tracking_uri == "sqlite:///elsewhere.db"


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert config_from_dict({}).tracking_uri.endswith(str(Path("runs/demo/mlflow.db")))


def test_the_knob_help_names_the_variable():
    from orchestrator.config import config_help

    line = next(row for row in config_help().splitlines() if "tracking.uri" in row)
    assert "MLFLOW_TRACKING_URI" in line


def test_a_password_in_the_uri_is_never_shown(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cr3t@mlflow.example.org/path")
    config = config_from_dict({})
    assert config.tracking_uri == "https://alice:s3cr3t@mlflow.example.org/path"   # MLflow gets it
    assert config.tracking_uri_shown == "https://alice:***@mlflow.example.org/path"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    assert config_from_dict({}).tracking_uri_shown == SERVER
