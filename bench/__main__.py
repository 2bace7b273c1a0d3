"""``python -m bench run`` runs the scenarios; ``python -m bench stub-load`` loads the LLM stub alone."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report, stubload
from bench.broker import DEFAULT_JIT, JIT_MODES, add_broker_argument, broker_info, require_broker
from bench.scenarios import SCENARIOS, RunOptions

logger = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"


def _s3_points(text: str) -> tuple[tuple[int, int], ...]:
    try:
        points = tuple((int(ms), int(inflight)) for ms, inflight in
                       (point.split(":") for point in text.split(",") if point.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--s3-points: expected MS:INFLIGHT[,MS:INFLIGHT...], got {text!r}") from None
    if not points:
        raise argparse.ArgumentTypeError("--s3-points: no point given")
    return points


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios, write bench/results/latest.{json,md} and plots")
    add_broker_argument(run)
    run.add_argument("--quick", action="store_true", help="smaller inputs, 1 repeat (~2-3 min)")
    run.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, e.g. S1,S2")
    run.add_argument("--repeats", type=int, default=None, help="runs per scenario; medians are reported "
                                                                "(default 3, or 1 with --quick)")
    run.add_argument("--peers", action="store_true", help="also run bench.peers side by side in S1-S3")
    run.add_argument("--profile", action="store_true",
                     help="sample the worker with py-spy in S1, S2 and S3 (200 ms, 1024 in flight)")
    run.add_argument("--stub-workers", type=int, default=1, help="LLM stub processes (SO_REUSEPORT)")
    run.add_argument("--no-stub-load", action="store_true", help="skip measuring the stub alone")
    run.add_argument("--s3-points", type=_s3_points, default=None, metavar="MS:INFLIGHT,...",
                     help="S3 only at these points, e.g. 200:1024,200:256 (default: all six)")
    run.add_argument("--s3-cap", type=float, default=None, metavar="RECORDS_PER_S",
                     help="S3's rate cap instead of a measured S2 rate (runs to compare on a loaded machine)")
    run.add_argument("--broker-warmup", type=float, default=20.0, metavar="SECONDS",
                     help="transactional load on each fresh broker before measuring, so the broker's JIT "
                          "warm-up does not share the cores with the scenario (0: none)")
    run.add_argument("--broker-jit", choices=tuple(JIT_MODES), default=DEFAULT_JIT,
                     help="c1: the broker's JVM compiles with C1 only (default; a bench broker lives about a "
                          "minute, and C2 compilation cost more CPU than it saved there); tiered: HotSpot's default")
    run.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    load = sub.add_parser("stub-load", help="requests/s of the LLM stub alone (wrk if installed)")
    load.add_argument("--workers", default="1", help="comma-separated stub process counts")
    load.add_argument("--connections", default="100,1000", help="comma-separated connection counts")
    load.add_argument("--seconds", type=float, default=8.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("worker").setLevel(logging.WARNING)
    if args.command == "stub-load":
        result = stubload.run([int(w) for w in args.workers.split(",")],
                              [int(c) for c in args.connections.split(",")], args.seconds)
        print(json.dumps(result, indent=2))
        return 0
    return run(args, argv if argv is not None else sys.argv[1:])


def run(args: argparse.Namespace, argv: list[str]) -> int:
    names = [n.strip().upper() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"--scenarios: unknown {unknown}; known {list(SCENARIOS)}")
    require_broker(args.broker)
    repeats = args.repeats or (1 if args.quick else 3)
    options = RunOptions(broker=args.broker, quick=args.quick, peers=args.peers, profile=args.profile,
                         stub_workers=args.stub_workers, results_dir=args.out, s3_points=args.s3_points,
                         s3_cap=args.s3_cap, broker_warmup_s=args.broker_warmup,
                         broker_jit=args.broker_jit)
    results: dict[str, Any] = {
        "command": "python -m bench " + shlex.join(argv), "mode": "quick" if args.quick else "full",
        "started": report.now(), "machine": report.machine(), "broker": broker_info(args.broker, jit=args.broker_jit),
        "repeats": repeats, "scenarios": {},
    }
    began = time.monotonic()
    if not args.no_stub_load:
        logger.info("stub alone under load")
        results["stub_load"] = stubload.run([1, 2] if args.stub_workers == 1 else [args.stub_workers], [100, 1000],
                                            2.0 if args.quick else 5.0)
    failures = 0
    for name in names:
        scenario = SCENARIOS[name]
        entry: dict[str, Any] = {"title": (scenario.__doc__ or "").strip().splitlines()[0] if scenario.__doc__
                                 else scenario.__name__, "runs": []}
        results["scenarios"][name] = entry
        for attempt in range(repeats):
            logger.info("%s run %d/%d", name, attempt + 1, repeats)
            t0 = time.monotonic()
            options.profile = args.profile and attempt == 0  # one profiled run per scenario
            try:
                figures = scenario(options)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the other scenarios
                logger.error("%s failed: %s", name, exc)
                entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                entry.setdefault("tracebacks", []).append(traceback.format_exc()[-4000:])
                failures += 1
                break
            figures["seconds"] = round(time.monotonic() - t0, 1)
            logger.info("%s: %s", name, {k: v for k, v in figures.items() if k != "profile"})
            entry["runs"].append(figures)
        if entry["runs"]:
            entry["median"] = report.median_figures(entry["runs"])
            options.measured[name] = entry["median"]
        report.write(results | {"finished": report.now(), "seconds": round(time.monotonic() - began)}, args.out)
    results["finished"] = report.now()
    results["seconds"] = round(time.monotonic() - began)
    paths = report.write(results, args.out)
    print((args.out / "latest.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
