"""The package as a user gets it: a wheel (not the source tree) installed into a fresh venv, run from a
folder that holds a `figures.py` and an `analyses.py` which fail loudly when imported.

The venv sees this test environment's packages through a .pth file (no second torch install); the
wheel is installed into it with `pip install --no-deps`.  Only zsq_probe may be installed, and
`zsq-probe figures`, `python -m zsq_probe figures` and `zsq_probe.plots.write_figures` must run on it.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from fabricated_runs import make_run

pytestmark = pytest.mark.slow  # builds a wheel and a venv: the end-to-end tier

ROOT = Path(__file__).resolve().parents[2]
TRAP = 'raise RuntimeError("the stray {name}.py in the working directory was imported")\n'


def _run(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MPLBACKEND")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the venv's python, the wheel's path) with the wheel of this source tree installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy, so the build writes nothing (build/, *.egg-info) into the working tree; the copy
    # keeps figures/ and analyses/ so the test shows that the build leaves them out
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("zsq_probe", "figures", "analyses"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            tmp / "dist",
            src,
        ],
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp / "dist").glob("zsq_probe-*.whl")

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # plain path lines: this environment's packages (torch, pandas, pip, ...) come after the venv's own;
    # .pth files in them (the editable install of the source tree) are not run
    Path(site, "_test_env_packages.pth").write_text("".join(p + "\n" for p in sorted(ours)))
    out = _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "--no-warn-script-location",
            wheel,
        ],
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr
    return python, wheel


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with traps named like the repository's script folders, and a small run in it."""
    path = tmp_path_factory.mktemp("user-folder")
    for name in ("figures", "analyses"):
        (path / f"{name}.py").write_text(TRAP.format(name=name))
    run, _ = make_run(
        path / "runs" / "zq-run",
        "gdfq",
        -0.1,
        12.0,
        0.5,
        seed=2,
        tables=("metrics", "cosine", "inter_epoch", "hessian_trace"),
    )
    kd, _ = make_run(
        path / "runs" / "kd-run",
        "kd",
        0.3,
        8.0,
        2.0,
        seed=1,
        source="real",
        tables=("metrics", "cosine", "hessian_trace"),
    )
    return path, run.path, kd.path


def test_the_wheel_holds_only_the_library(installed):
    _, wheel = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = {n.split("/")[0] for n in names}
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert top == {"zsq_probe", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "zsq_probe/plots/catalog.py" in names and "zsq_probe/cli/__init__.py" in names
    assert "zsq-probe = zsq_probe.cli:main" in entry_points


def _pngs(folder):
    return sorted(p.name for p in Path(folder).glob("*.png") if p.stat().st_size > 5000)


def test_console_script_draws_from_the_wheel(installed, workdir):
    python, _ = installed
    path, zq, kd = workdir
    script = python.parent / ("zsq-probe.exe" if os.name == "nt" else "zsq-probe")
    out = _run([script, "figures", "--runs", kd, zq, "--out", "out-script"], cwd=path)
    assert out.returncode == 0, out.stderr
    assert "stray" not in out.stderr
    assert _pngs(path / "out-script") == [
        "fig1_cosine.png",
        "fig2b_hessian_trace.png",
        "fig3a_inter_epoch.png",
        "fig5_training.png",
    ]
    # one (model, data set) setting: the cross-setting figures skip, each with its one-line reason (log lines, on
    # stderr)
    assert out.stderr.count("wrote ") == 4 and "skipped fig2c" in out.stderr
    assert "skipped fig7_8: " in out.stderr and "skipped fig9: " in out.stderr
    assert out.stdout == ""


def test_python_m_draws_from_the_wheel_beside_a_stray_figures_py(installed, workdir):
    """`python -m` puts the working directory first on sys.path: a figures.py there must not be imported."""
    python, _ = installed
    path, zq, kd = workdir
    out = _run(
        [python, "-m", "zsq_probe", "figures", "--runs", kd, zq, "--out", "out-m", "--only", "fig1,fig2b"], cwd=path
    )
    assert out.returncode == 0, out.stderr
    assert _pngs(path / "out-m") == ["fig1_cosine.png", "fig2b_hessian_trace.png"]


def test_write_figures_in_process_from_the_wheel(installed, workdir):
    python, _ = installed
    path, zq, _ = workdir
    code = (
        "import json, sys, zsq_probe, zsq_probe.plots as plots; "
        "written, failed = plots.write_figures([sys.argv[1]], 'out-api', only='fig3a,fig5'); "
        "print(json.dumps([zsq_probe.__file__, sys.prefix, [str(p) for p in written], failed, "
        "'figures' in sys.modules or 'analyses' in sys.modules]))"
    )
    out = _run([python, "-c", code, zq], cwd=path)
    assert out.returncode == 0, out.stderr
    module_file, prefix, written, failed, trap_imported = json.loads(out.stdout.strip().splitlines()[-1])
    # the wheel's copy, inside the fresh venv: not the source tree (no editable install leaks in)
    assert Path(module_file).resolve().is_relative_to(Path(prefix).resolve()), module_file
    assert not Path(module_file).resolve().is_relative_to(ROOT), module_file
    assert failed == 0 and not trap_imported
    assert _pngs(path / "out-api") == ["fig3a_inter_epoch.png", "fig5_training.png"]


def test_no_generic_top_level_names_are_installed(installed, tmp_path):
    python, _ = installed
    code = (
        "import importlib.util, json; "
        "print(json.dumps([importlib.util.find_spec(n) is None for n in ('figures', 'analyses')]))"
    )
    out = _run([python, "-c", code], cwd=tmp_path)  # a clean folder: nothing named figures here
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True, True]
