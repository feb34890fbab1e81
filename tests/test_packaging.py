"""What ``pip install drgym`` puts on a machine: one top-level name, so it sits beside any other package.

``agents`` is the import name of the OpenAI Agents SDK; drgym's agents and benchmarks install as
``drgym.agents`` and ``drgym.benchmarks``. The wheel is built from this checkout and installed with pip into a
folder of its own, next to a package that owns ``agents``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SOURCE = ("pyproject.toml", "README.md", "LICENSE", "drgym", "agents", "benchmarks")
_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]

_CHECK = """
import json, sys
from importlib.metadata import entry_points
import agents
from drgym.agent import agent_names, make_agent
from drgym.agents.scripted import ScriptedAgent
from drgym.benchmarks.run import main as bench_main
agent = make_agent("scripted")
print(json.dumps({
    "agents_owner": agents.OWNER,
    "agent_names": agent_names(),
    "scripted_file": sys.modules[type(agent).__module__].__file__,
    "same_class": type(agent) is ScriptedAgent,
    "bench_file": sys.modules[bench_main.__module__].__file__,
    "commands": [ep.name for ep in entry_points(group="drgym.commands")],
}))
"""


def _wheel_packages(names: list[str]) -> set[str]:
    return {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}


def _checkout_packages() -> set[str]:
    found = set()
    for top, installed in (("drgym", "drgym"), ("agents", "drgym.agents"), ("benchmarks", "drgym.benchmarks")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            found.add(".".join([installed, *rel.parts]))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: building writes build/ and *.egg-info beside pyproject.toml
    source.mkdir()
    for name in _SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([*_PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True, timeout=300, cwd=out)
    (whl,) = out.glob("drgym-*.whl")
    return whl


@pytest.mark.slow
def test_the_wheel_installs_only_the_drgym_name_and_every_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"drgym"}
    assert _checkout_packages() <= _wheel_packages(names)  # a new subpackage missing from pyproject fails here
    assert "drgym/data/demo/questions.jsonl" in names and "drgym/agents/grpo/configs/tiny-cpu.yaml" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text


@pytest.mark.slow
def test_drgym_installs_beside_a_package_that_owns_agents(wheel: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "agents").mkdir(parents=True)
    (other / "agents" / "__init__.py").write_text('OWNER = "other"\n')
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "other-agents"\nversion = "1.0"\n[tool.setuptools]\npackages = ["agents"]\n'
    )
    site = tmp_path / "site"
    for target in (str(other), str(wheel)):
        subprocess.run([*_PIP, "install", "--no-deps", "--no-build-isolation", "--target", str(site), target],
                       check=True, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    proc = subprocess.run([sys.executable, "-c", _CHECK], check=False, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["agents_owner"] == "other"
    assert {"scripted", "prompt", "rag", "grpo"} <= set(seen["agent_names"])
    assert seen["same_class"] and seen["scripted_file"].startswith(str(site / "drgym" / "agents"))
    assert seen["commands"] == ["bench"]
    assert seen["bench_file"].startswith(str(site / "drgym" / "benchmarks"))
