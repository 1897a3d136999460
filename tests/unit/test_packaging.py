"""The wheel installs one top-level package, `scoutless`, holding every module of the checkout, and it works
installed on its own; bentofile.yaml ships that wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from scoutless.serving.stage import build_wheel, package_folders
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_the_wheel_has_one_top_level_package_with_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"scoutless", f"scoutless-{version('scoutless')}.dist-info"}
    modules = {name for name in names if name.endswith(".py")}
    sources = {f"{package.replace('.', '/')}/{path.relative_to(REPO / folder).as_posix()}"
               for package, folder in package_folders(REPO).items() for path in (REPO / folder).rglob("*.py")}
    assert modules == sources
    assert "scoutless/simulator/world.py" in modules and "scoutless/archive/sources.py" in modules


def test_the_wheel_works_installed_on_its_own(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    # From an empty folder, with the wheel's copy first on the path: nothing comes from the checkout.
    code = ("import scoutless.cli, scoutless.flows.pipeline, scoutless.serving.service as service; "
            "print(service.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(target)})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip().splitlines()[-1]).is_relative_to(target)


def test_the_bento_ships_this_wheel_and_no_loose_code(wheel):
    bento = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert bento["service"].startswith("scoutless.")
    assert [Path(path).name for path in bento["python"]["wheels"]] == [wheel.name]
    assert not [pattern for pattern in bento["include"] if pattern.endswith(".py")]
