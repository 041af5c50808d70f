"""Regenerate a committed protobuf module and compare it semantically (no skip on a fresh install).

The generated files carry the generator's version (``Protobuf Python Version``, the runtime check,
``GRPC_GENERATED_VERSION``), which differs between grpcio-tools patch releases while the content
does not. So the comparison is of what the files mean:

- ``*_pb2.py``: the serialized ``FileDescriptorProto`` each embeds (``AddSerializedFile(b"...")``),
  parsed and compared as messages;
- ``*_pb2.pyi`` and ``*_pb2_grpc.py``: their syntax trees, with the version assignments removed
  (and the committed ``GRPC_GENERATED_VERSION`` no newer than the installed grpcio, which the module
  itself checks at import).
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

from google.protobuf import descriptor_pb2

#: assignments that only record the generator's version
_VERSION_NAMES = {"GRPC_GENERATED_VERSION"}


def generate(proto_root: Path, proto: str, out: Path, *, pyi: bool = False, grpc: bool = False) -> None:
    """Run grpc_tools' bundled protoc on ``proto_root/proto`` into ``out``."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}"]
    if pyi:
        args.append(f"--pyi_out={out}")
    if grpc:
        args.append(f"--grpc_python_out={out}")
    rc = protoc.main([*args, str(proto_root / proto)])
    assert rc == 0, f"protoc failed on {proto}"


def embedded_descriptor(pb2_source: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto a generated ``*_pb2.py`` registers."""
    for node in ast.walk(ast.parse(pb2_source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return descriptor_pb2.FileDescriptorProto.FromString(node.args[0].value)
    raise AssertionError("no AddSerializedFile(b'...') in the generated module")


def _tree_without_versions(source: str) -> str:
    tree = ast.parse(source)
    tree.body = [
        node
        for node in tree.body
        if not (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in _VERSION_NAMES for t in node.targets)
        )
    ]
    return ast.dump(tree)


def grpc_generated_version(source: str) -> tuple[int, ...]:
    """``GRPC_GENERATED_VERSION`` of a ``*_pb2_grpc.py`` as a tuple of ints."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "GRPC_GENERATED_VERSION" for t in node.targets
        ):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            return tuple(int(p) for p in node.value.value.split("."))
    raise AssertionError("no GRPC_GENERATED_VERSION")


def differences(fresh_dir: Path, committed_dir: Path, names: tuple[str, ...]) -> list[str]:
    """The generated files (by name) whose meaning differs between the two directories."""
    stale = []
    for name in names:
        fresh = (fresh_dir / name).read_text()
        committed = (committed_dir / name).read_text()
        if name.endswith("_pb2.py"):
            same = embedded_descriptor(fresh) == embedded_descriptor(committed)
        else:
            same = _tree_without_versions(fresh) == _tree_without_versions(committed)
        if not same:
            stale.append(name)
        if name.endswith("_grpc.py"):
            installed = tuple(int(p) for p in importlib.metadata.version("grpcio").split(".")[:3])
            if grpc_generated_version(committed) > installed:
                stale.append(f"{name} (needs grpcio >= its GRPC_GENERATED_VERSION)")
    return stale


__all__ = ["differences", "embedded_descriptor", "generate", "grpc_generated_version"]
