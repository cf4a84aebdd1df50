"""python -m benchmarks list | run SUITE[.CASE] [--set KEY=VALUE ...] [--quick] | report [--all]

    python -m benchmarks list                        # every suite, its cases and their parameters
    python -m benchmarks run sampling --quick        # a couple of minutes on 2 cores
    python -m benchmarks run quality.sampling --set model=ldm --set n=10000
    python -m benchmarks run precision               # the bf16 check, on a CPU with AMX or AVX-512-BF16
    python -m benchmarks run gpu                     # the CUDA check, on a machine with a GPU
    python -m benchmarks report                      # docs/results.md and the README's headline block

Results: one JSON line per measured variant in benchmarks/results/<suite>.jsonl (or --results DIR).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    from benchmarks.core import RESULTS, ROOT

    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the <suite>.jsonl files")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="suites, cases and parameters")
    run = sub.add_parser("run", help="run a suite or one case and append its records")
    run.add_argument("target", help="SUITE or SUITE.CASE")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a case parameter")
    run.add_argument("--quick", action="store_true", help="each parameter's quick value: a smoke run")
    rep = sub.add_parser("report", help="render the results page and the README headline block")
    rep.add_argument("--all", action="store_true", help="superseded and legacy records too")
    rep.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    rep.add_argument("--readme", type=Path, default=ROOT / "README.md")
    return ap


def list_cases() -> str:
    from benchmarks.core import SUITES, load_suites

    cases = load_suites()
    lines = []
    for suite in SUITES:
        lines.append(f"{suite}")
        for c in (c for c in cases.values() if c.suite == suite):
            lines.append(f"  {c.full:<28} {c.doc}")
            for k, p in c.params.items():
                quick = "" if p.quick is None else f" (quick {_show(p.quick)})"
                lines.append(f"      {k}={_show(p.default)}{quick}" + (f"  {p.help}" if p.help else ""))
    return "\n".join(lines)


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from benchmarks.core import BenchError

    try:
        if args.command == "list":
            print(list_cases())
        elif args.command == "report":
            from benchmarks.report import report

            print(report(args.results, args.out, args.readme, show_all=args.all))
        else:
            import mnist_diffusion  # noqa: F401  (before torch: it sets OpenMP's waiting, as under the CLI)
            from benchmarks.core import Recorder, command_line, select

            cases = select(args.target)
            if len(cases) > 1:  # a suite: each --set goes to the cases that have the parameter
                unknown = [s for s in args.set if not any(s.partition("=")[0] in c.params for c in cases)]
                if unknown:
                    raise BenchError(f"--set {unknown[0]}: no case of {args.target} has that parameter.")
            # every value is checked before anything runs
            runs = [
                (c, c.resolve([s for s in args.set if len(cases) == 1 or s.partition("=")[0] in c.params], args.quick))
                for c in cases
            ]
            recorder = Recorder(args.results, command_line(argv))
            for c, values in runs:
                recorder.run(c, values)
            print(f"{len(recorder.written)} records appended under {args.results}")
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
