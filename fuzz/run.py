"""Run the fuzz targets: ``python -m fuzz --target NAME|all --examples N`` (from the project root;
``python fuzz/run.py ...`` works too).

Engines:

* ``hypothesis`` (default): structured and mutated inputs, shrinks a failure to a minimal example
  and prints it. Derandomized unless ``--seed`` is given... (``--seed`` picks the run).
* ``random``: a seeded byte mutator over the seed corpora, much faster per input: use it for the
  long runs, e.g. a million frame streams:
  ``python -m fuzz --target frames --engine random --examples 1000000``.
* ``atheris``: coverage-guided libFuzzer, when ``atheris`` is importable (not a dependency):
  ``python -m fuzz --target quote --engine atheris -- -runs=1000000``.

Exit status 0 when no input broke its target's invariant, 1 otherwise (the input is printed, as hex,
and saved under ``--crash-dir``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # ``python fuzz/run.py``: make ``fuzz`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.registry import TARGETS, Target
from fuzz.target import random_mutation


def run_hypothesis(target: Target, examples: int, seed: int | None) -> int:
    """Run ``examples`` hypothesis examples; returns the units covered (raises on a finding)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    units = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(target.strategy())
    def prop(value: object) -> None:
        nonlocal units
        units += target.check(value)

    if seed is not None:
        prop = hseed(seed)(prop)
    prop()
    return units


def run_random(target: Target, examples: int, seed: int | None, crash_dir: Path | None) -> int:
    """The seeded mutator: ``examples`` inputs; returns the units covered (raises on a finding)."""
    rng = random.Random(seed if seed is not None else 0)
    seeds = list(target.seeds())
    units = 0
    for _ in range(examples):
        data = random_mutation(rng, seeds, target.max_size)
        try:
            units += target.run_bytes(data)
        except BaseException:
            _save(target, data, crash_dir)
            raise
    return units


def _save(target: Target, data: bytes, crash_dir: Path | None) -> None:
    print(f"\n{target.name}: invariant broken by input ({len(data)} bytes): {data.hex()}", file=sys.stderr)
    if crash_dir is not None:
        crash_dir.mkdir(parents=True, exist_ok=True)
        path = crash_dir / f"crash-{target.name}-{abs(hash(data)):x}"
        path.write_bytes(data)
        print(f"saved to {path}", file=sys.stderr)


def run_atheris(target: Target, extra_args: list[str]) -> None:  # pragma: no cover - optional tool
    """Hand the target to libFuzzer through atheris (never returns on its own)."""
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    corpus = [a for a in extra_args if not a.startswith("-")]
    if corpus and not any(Path(c).exists() and any(Path(c).iterdir()) for c in corpus):
        for i, seed in enumerate(target.seeds()):
            Path(corpus[0]).mkdir(parents=True, exist_ok=True)
            (Path(corpus[0]) / f"seed-{i}").write_bytes(seed)
    atheris.instrument_all()  # coverage feedback for the already-imported parsers
    atheris.Setup([sys.argv[0], *extra_args], target.run_bytes)
    atheris.Fuzz()


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    names = ", ".join(TARGETS)
    p = argparse.ArgumentParser(
        prog="python -m fuzz",
        description="Fuzz the parsers of outside bytes. Invariant: parse or raise our error; the "
        "service answers every request it decodes validly.",
        epilog="examples:\n"
        "  python -m fuzz --target all --examples 200\n"
        "  python -m fuzz --target frames --engine random --examples 1000000\n"
        "  python -m fuzz --target quote --engine atheris -- -runs=100000 /tmp/quote-corpus\n"
        f"targets: {names}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default="all", help="a target name, or 'all' (default)")
    p.add_argument("--examples", type=int, default=1000, help="inputs per target (default 1000)")
    p.add_argument("--engine", choices=("hypothesis", "random", "atheris"), default="hypothesis")
    p.add_argument("--seed", type=int, default=None, help="make the run reproducible with another seed")
    p.add_argument("--crash-dir", type=Path, default=None, help="save inputs that break an invariant here")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    return p.parse_args(argv), extra


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module doc)."""
    args, extra = parse_args(argv)
    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:12} {target.doc}")
        return 0
    if args.target != "all" and args.target not in TARGETS:
        print(f"unknown target {args.target!r}; one of: {', '.join(TARGETS)}, all", file=sys.stderr)
        return 2
    chosen = list(TARGETS.values()) if args.target == "all" else [TARGETS[args.target]]
    if args.engine == "atheris":
        if len(chosen) != 1:
            print("atheris runs one target at a time: --target NAME", file=sys.stderr)
            return 2
        run_atheris(chosen[0], extra)
        return 0
    failed = []
    for target in chosen:
        start = time.monotonic()
        try:
            if args.engine == "hypothesis":
                units = run_hypothesis(target, args.examples, args.seed)
            else:
                units = run_random(target, args.examples, args.seed, args.crash_dir)
        except Exception:
            traceback.print_exc()
            failed.append(target.name)
            print(f"{target.name:12} FAILED", flush=True)
            continue
        took = time.monotonic() - start
        print(f"{target.name:12} ok  {args.examples} inputs, {units} units, {took:.1f}s", flush=True)
    if failed:
        print(f"invariant broken in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
