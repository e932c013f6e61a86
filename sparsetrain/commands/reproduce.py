"""`sparsetrain reproduce`: the converged accuracy sweep of docs/reproduction.md (run, status, collect, table)."""
from __future__ import annotations

import argparse
import datetime
import re

NAME = "reproduce"
HELP = "run the reproduction sweep (network x width x baseline/p x seed) resumably, collect it, generate its tables"
DEFAULT_PLAN = "docs/data/reproduction_plan.json"
DEFAULT_RESULTS = "docs/data/reproduction.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="train the plan's runs into --out (finished runs are skipped)")
    r.add_argument("--plan", default=DEFAULT_PLAN, help=f"plan JSON (default {DEFAULT_PLAN})")
    r.add_argument("--out", required=True, help="sweep folder (one run directory per run)")
    r.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: skip finished runs, resume interrupted ones")
    r.add_argument("--only", nargs="+", metavar="PATTERN", help="run names to train (shell patterns)")
    r.add_argument("--max-runs", type=int, default=None, help="train at most this many runs, then stop")
    r.add_argument("--no-start-after", default=None, metavar="TIME",
                   help="start or resume no run after this time (HH:MM today, local time, or an ISO date-time): "
                        "a worker finishes its run and stops")
    r.add_argument("--progress-every", type=int, default=100, help="print progress every this many steps")
    r.add_argument("--results", default=None, metavar="JSON",
                   help="skip the runs this results file records as finished with the plan's command "
                        f"(e.g. {DEFAULT_RESULTS}: continue a sweep on a machine without the earlier run folders)")
    s = sub.add_parser("status", help="which runs of the plan are finished, partial or missing in --out")
    s.add_argument("--plan", default=DEFAULT_PLAN)
    s.add_argument("--out", required=True)
    c = sub.add_parser("collect", help="gather the sweep's runs into one results JSON")
    c.add_argument("--plan", default=DEFAULT_PLAN)
    c.add_argument("--out", required=True, help="sweep folder")
    c.add_argument("--json", default=DEFAULT_RESULTS,
                   help=f"results file to write (default {DEFAULT_RESULTS}); its finished runs that --out does not "
                        f"hold are kept when the plan still trains them with the same command")
    c.add_argument("--replace", action="store_true", help="do not keep the earlier results file's runs")
    t = sub.add_parser("table", help="print the tables from the results JSON; --doc / --plots write them")
    t.add_argument("--json", default=DEFAULT_RESULTS, help=f"results file (default {DEFAULT_RESULTS})")
    t.add_argument("--doc", default=None, help="replace the generated section of this markdown file")
    t.add_argument("--reference", default=None, metavar="JSON",
                   help="results file of the same runs with a longer epoch budget (docs/data/reproduction_15ep.json): "
                        "adds the budget check")
    t.add_argument("--plots", default=None, metavar="PREFIX",
                   help="write PREFIX_accuracy.png and PREFIX_density.png (docs: docs/img/reproduction)")


def parse_time(text: str, now: datetime.datetime | None = None) -> float:
    """``HH:MM`` (today, local time) or an ISO date-time, as seconds since the epoch."""
    now = now or datetime.datetime.now()
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}", text):
            h, m = map(int, text.split(":"))
            return now.replace(hour=h, minute=m, second=0, microsecond=0).timestamp()
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"no_start_after = {text!r} is out of range; allowed: HH:MM (00:00 .. 23:59, today) or an "
                         f"ISO date-time such as 2026-12-02T11:40") from None


def run(args: argparse.Namespace) -> int:
    from ..reproduce.plan import load_plan

    if args.action == "run":
        from ..reproduce.runner import run_sweep
        if args.max_runs is not None and args.max_runs < 1:
            raise ValueError(f"max_runs = {args.max_runs} is out of range; allowed: >= 1")
        if args.progress_every < 1:
            raise ValueError(f"progress_every = {args.progress_every} is out of range; allowed: >= 1")
        plan = load_plan(args.plan)
        start_before = None if args.no_start_after is None else parse_time(args.no_start_after)
        skip: set[str] = set()
        if args.results is not None:
            from ..reproduce.collect import finished_with_plan, load_results
            skip = set(finished_with_plan(plan, load_results(args.results))[0])
            print(f"{args.results}: {len(skip)} runs of the plan finished there; skipped", flush=True)
        try:
            rep = run_sweep(plan, args.out, resume=args.resume, only=args.only, skip=skip,
                            max_runs=args.max_runs, start_before=start_before, progress_every=args.progress_every)
        except (FileExistsError, FileNotFoundError) as exc:
            raise ValueError(str(exc)) from None
        counts = {a: len(rep.names(a)) for a in dict.fromkeys(rep.actions.values())}
        print("sweep: " + ", ".join(f"{n} {a}" for a, n in counts.items()), flush=True)
        return 128 + rep.interrupted.signum if rep.interrupted is not None else 0
    if args.action == "status":
        from ..reproduce.runner import sweep_status
        for name, state in sweep_status(load_plan(args.plan), args.out).items():
            print(f"{name:40s} {state}")
        return 0
    if args.action == "collect":
        from pathlib import Path

        from ..outdir import check_file_target
        from ..reproduce.collect import collect, load_results, merge_previous, write_results
        check_file_target(args.json, "--json")
        plan = load_plan(args.plan)
        res = collect(plan, args.out)
        if Path(args.json).exists() and not args.replace:
            kept, dropped = merge_previous(res, load_results(args.json), plan)
            if kept:
                print(f"kept from the earlier {args.json}: {', '.join(kept)}")
            if dropped:
                print(f"dropped from the earlier {args.json} (the plan trains them otherwise now): {', '.join(dropped)}")
        write_results(res, args.json)
        n = sum(r["status"] == "finished" for r in res["runs"])
        print(f"wrote {args.json}: {len(res['runs'])} runs, {n} finished")
        return 0
    from ..reproduce.collect import load_results
    from ..reproduce.table import plot_curves, render, update_doc
    res = load_results(args.json)
    ref = load_results(args.reference) if args.reference else None
    section = render(res, reference=ref, reference_name=args.reference or "", results_name=args.json)
    if args.doc:
        print(f"wrote {update_doc(args.doc, section)}")
    else:
        print(section)
    if args.plots:
        for path in plot_curves(res, args.plots, reference=ref):
            print(f"wrote {path}")
    return 0
