"""Installing the checkout: ``pip install .`` and ``pip install -e .`` both work from any folder, and the
``bench`` extra (matplotlib) is named when it is missing.

setup.py's ``package_dir`` maps the top-level ``export/`` and ``zoo_configs/`` into the package as
``dynzoo.export`` and ``dynzoo.zoo_configs``. Each install goes into a fresh virtual environment under the
test's temporary folder, offline (``--no-deps --no-build-isolation --no-index``): the packages of the running
interpreter (TensorFlow, Keras, setuptools, …) are seen there through symbolic links, less any dynzoo
installed in it, so only the fresh install can answer ``import dynzoo`` (and less matplotlib, which only
the ``bench`` extra brings).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Run by the fresh environment's interpreter in an unrelated folder; prints where everything came from.
CHECKS = """
import importlib.metadata, importlib.resources, importlib.util, json, sys
import dynzoo, dynzoo.export, dynzoo.cli
from dynzoo.config import load_config
dynzoo.cli.build_parser()  # every command's module
dist = importlib.metadata.distribution("dynzoo")
print(json.dumps({
    "dynzoo": dynzoo.__file__,
    "export": dynzoo.export.__file__,
    "zoo_configs": str(importlib.resources.files("dynzoo.zoo_configs").joinpath("micronet.json")),
    "micronet_models": len(load_config("micronet")["models"]),
    "license": any(p.name == "LICENSE" for p in dist.files or ()),
    "requires": dist.requires,
    "matplotlib": importlib.util.find_spec("matplotlib") is not None or "matplotlib" in sys.modules,
}))
"""


def _left_out(name: str) -> bool:
    """An installed dynzoo's entry in site-packages (the package, its metadata, an editable hook), or
    matplotlib's: the package imports without its ``bench`` extra."""
    return name in ("dynzoo", "matplotlib", "mpl_toolkits", "pylab.py") or name.startswith(
        ("dynzoo-", "dynzoo.", "__editable__.dynzoo-", "__editable___dynzoo_", "matplotlib-", "matplotlib.")
    )


def _copy_checkout(dest: Path) -> None:
    """The checkout's sources (git's tracked and untracked, not ignored, files): the build writes ``build/``
    and ``*.egg-info`` into the folder it installs from, which must not be the checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        ignore = shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "node_modules", "test-artifacts", "__pycache__", "web_demo_site"
        )
        shutil.copytree(REPO, dest, ignore=ignore)
        return
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # not one deleted in the working tree, nor a submodule
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _outer_packages(dest: Path) -> Path:
    """A folder of links to the running interpreter's installed packages, less dynzoo and matplotlib."""
    dest.mkdir()
    folders = [*site.getsitepackages(), *(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))]
    for folder in dict.fromkeys(folders):
        if not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            if not _left_out(entry.name) and not (dest / entry.name).exists():
                (dest / entry.name).symlink_to(entry)
    return dest


def _environment(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A new virtual environment (its interpreter, its site-packages) that also sees the running
    interpreter's packages, after its own; and the environment variables to run it with."""
    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root)
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        PYTHONNOUSERSITE="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    outer = _outer_packages(tmp_path / "outer")
    # addsitedir appends: the environment's own site-packages stays first; the linked .pth files run too.
    (Path(purelib) / "_outer_packages.pth").write_text(f"import site; site.addsitedir({str(outer)!r})\n")
    return python, Path(purelib), env


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_works_from_any_folder(tmp_path, editable):
    pytest.importorskip("setuptools", reason="the offline build needs setuptools (the test extra)")
    if os.name == "nt":
        pytest.skip("symbolic links to the outer packages")
    source = tmp_path / "source"
    _copy_checkout(source)
    python, purelib, env = _environment(tmp_path)
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-cache-dir"]
    install += ["--no-deps", "--no-build-isolation", *(["-e"] if editable else []), str(source)]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([python, "-c", CHECKS], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # the sources themselves, from the copy (not the checkout the tests run from); or copies in the environment
    where = {"dynzoo": source / "dynzoo", "export": source / "export", "zoo_configs": source / "zoo_configs"}
    if not editable:
        where = {"dynzoo": purelib / "dynzoo", "export": purelib / "dynzoo" / "export"}
        where["zoo_configs"] = purelib / "dynzoo" / "zoo_configs"
    assert Path(found["dynzoo"]).resolve() == (where["dynzoo"] / "__init__.py").resolve()
    assert Path(found["export"]).resolve() == (where["export"] / "__init__.py").resolve()
    assert Path(found["zoo_configs"]).resolve() == (where["zoo_configs"] / "micronet.json").resolve()
    if not editable:
        assert found["license"], "the wheel ships LICENSE"
    assert found["micronet_models"] > 0
    assert not found["matplotlib"]  # the bench extra is not needed to import dynzoo or build its command
    assert not any(r.startswith("matplotlib") for r in found["requires"] if "extra ==" not in r)

    # from the checkout's root, Python imports the source folder dynzoo/ ahead of the install: the
    # configurations still load (zoo_configs/ beside it), as the suite's subprocesses started there need
    result = subprocess.run(
        [python, "-c", "import dynzoo; print(len(dynzoo.list_models()), dynzoo.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=source,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    count, origin = result.stdout.split()[-2:]
    assert Path(origin).resolve() == (source / "dynzoo" / "__init__.py").resolve()
    assert int(count) > 50  # every family's configuration was read

    script = python.parent / "dynzoo"
    assert str(python) in script.read_text()  # the environment's interpreter runs it
    result = subprocess.run([script, "--help"], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "bench" in result.stdout and "train" in result.stdout


def test_bench_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    """matplotlib is the ``bench`` extra: without it, ``dynzoo bench`` stops before timing anything with one
    error line (exit status 2) that says what to install, and the per-op profile's chart raises the same
    ImportError."""
    from dynzoo.cli import main
    from dynzoo.export import bench, op_profile

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    timed = []
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: timed.append(a))
    monkeypatch.setattr(op_profile, "flatbuffer_for", lambda *a, **k: timed.append(a))
    for flags in ([], ["--profile"]):
        assert main(["bench", "micronet_m0", *flags, "--no-baselines", "-o", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err == 'dynzoo bench: error: the PNG charts of `dynzoo bench` need matplotlib: pip install "dynzoo[bench]"'
        )
    assert not timed and not list(tmp_path.iterdir())  # it stopped before timing anything

    profile = op_profile.OpProfile(
        ops=[], model_us=1.0, overhead_us=0.0, partitions=1, num_threads=1, xnnpack=True, runs=1
    )
    with pytest.raises(ImportError, match=r'pip install "dynzoo\[bench\]"') as raised:
        profile.plot(tmp_path / "p.png")
    assert raised.value.name == "matplotlib"
