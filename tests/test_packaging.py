"""The Dockerfile and the Makefile install the project with the same recipe
(scripts/install.sh), and that recipe's non-editable install, as the image gets it, holds
every module and data file and runs from outside the repository (Docker cannot run here)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_the_dockerfile_and_the_makefile_share_one_install_recipe() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    docker_runs = re.findall(r"^RUN (.+)$", dockerfile, flags=re.MULTILINE)
    assert any('sh scripts/install.sh /opt/venv ".${EXTRAS}"' in run for run in docker_runs)
    assert "COPY scripts/install.sh" in dockerfile
    stamp_recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "sh scripts/install.sh $(VENV)" in stamp_recipe
    # nothing else installs the project: no second recipe to drift
    assert "pip install" not in dockerfile
    assert "-m venv" not in stamp_recipe and "pip install" not in stamp_recipe


def project_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["project"]["scripts"]


@pytest.mark.parametrize("name", ["fashionbot", "fashionbot-index"])
def test_the_entry_points_resolve_to_the_commands(name: str) -> None:
    module, _, attribute = project_scripts()[name].partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert callable(command)
    with pytest.raises(SystemExit) as exited:  # argparse's --help: the command is wired up
        command(["--help"])
    assert exited.value.code == 0


def docker_build_context(target: Path) -> Path:
    """What the Dockerfile's build stage copies before installing, copied the same way."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    build_stage = dockerfile.split(" AS build", 1)[1].split("\nFROM ", 1)[0]
    for line in build_stage.splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, destination = line.split()[1:]
        for source in sources:
            origin, dest = REPO_ROOT / source, target / destination
            if origin.is_dir():  # Docker copies a folder's contents into the destination
                shutil.copytree(origin, dest)
            else:
                if destination.endswith("/"):
                    dest = dest / origin.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest)
    return target


def test_the_image_install_holds_every_module_and_runs_outside_the_repo(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    context = docker_build_context(tmp_path / "context")
    # The image's step is `install.sh /opt/venv .` in that context: pip builds a wheel of
    # the project and installs it. Here the wheel is built by this venv's setuptools (a fresh
    # venv's is too old to build without downloading a newer one) and dependencies are left
    # out (this venv has them): what is checked is the project as the image installs it.
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), "."),
        ],
        cwd=context,
        check=True,
        timeout=240,
    )
    (wheel,) = (tmp_path / "dist").glob("fashionbot-*.whl")
    subprocess.run(
        ["sh", "scripts/install.sh", str(venv), "--no-deps", str(wheel)],
        cwd=context,
        env={**os.environ, "PYTHON": sys.executable, "TORCH_INDEX": ""},
        check=True,
        timeout=240,
    )
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    sources = {
        p.relative_to(REPO_ROOT).as_posix()
        for pattern in ("bot/**/*.py", "engine/**/*.py", "bot/i18n/*.json", "engine/weights/*")
        for p in REPO_ROOT.glob(pattern)
    }
    installed = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert sources - installed == set()
    assert "index_builder.py" in installed
    # the fakes serve the tests and the bench from the checkout; the image has no use for them
    assert not {p for p in installed if p.startswith(("tests/", "bench/"))}
    scripts = Path(sysconfig.get_path("scripts", vars={"base": str(venv)}))
    assert {name for name in project_scripts() if not (scripts / name).is_file()} == set()

    # Imported from the installed copy (first on the path), outside the repository.
    probe = (
        "import bot.__main__, bot.render, engine.evaluation.runner, engine.ingest.ray_embed, "
        "index_builder, engine, bot\n"
        "from bot.i18n import catalog, languages\n"
        "assert languages() == ['de', 'en'] and catalog('de'), languages()\n"
        "print(engine.__file__, bot.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    engine_file, bot_file = result.stdout.split()
    assert engine_file.startswith(str(site)) and bot_file.startswith(str(site))
