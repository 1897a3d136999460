"""params.yaml is validated at load: misspelt keys and bad values are errors that name them."""

from pathlib import Path

import pytest

from scoutless.params import ParamsError, load_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_repository_params_load():
    params = load_params(REPO_PARAMS)
    assert params.archive.url.startswith("sqlite:///")
    assert params.extract.jedi.ramcount_percentile == 75


def test_a_misspelt_key_is_named(tmp_path):
    text = REPO_PARAMS.read_text().replace("chunk_tasks:", "chunk_taks:")
    with pytest.raises(ParamsError, match=r"extract\.chunk_taks: Extra inputs are not permitted"):
        load_params(write(tmp_path, text))


def test_a_bad_value_is_named(tmp_path):
    text = REPO_PARAMS.read_text().replace("ramcount_percentile: 75", "ramcount_percentile: 175")
    with pytest.raises(ParamsError, match=r"extract\.jedi\.ramcount_percentile"):
        load_params(write(tmp_path, text))


def test_archive_url_comes_from_argument_then_environment_then_file(tmp_path, monkeypatch):
    path = write(tmp_path, REPO_PARAMS.read_text())
    monkeypatch.setenv("SCOUTLESS_ARCHIVE_URL", "postgresql+psycopg://env@host/db")
    assert load_params(path).archive.url == "postgresql+psycopg://env@host/db"
    assert load_params(path, archive_url="sqlite:///x.sqlite").archive.url == "sqlite:///x.sqlite"
    monkeypatch.delenv("SCOUTLESS_ARCHIVE_URL")
    assert load_params(path).archive.url == "sqlite:///data/archive/panda.sqlite"


def test_unreadable_yaml_is_reported(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(write(tmp_path, "archive: [unclosed"))
