"""`edgekit bench` (latency of model files on devices) and `edgekit devices` (list the profiles, check one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.cli.common import JSON_HELP, Runtime, console, err_console, parse_list, print_json, user_errors, warn
from edgekit.core.errors import EdgekitError
from edgekit.core.ui import status_line

DEVICE_HELP = ("Device profile name(s), comma-separated (run concurrently), or a profile .yaml; `edgekit devices` "
               "lists them.")

WARMUP_HELP = "Warm-up runs at least, and at least --warmup-seconds (default 1)."
WARMUP_SECONDS_HELP = "Warm-up time at least, per configuration (default 1 s)."
RUNS_HELP = "Timed runs at least, and at least --min-seconds (default 50, as benchmark_model)."
MIN_SECONDS_HELP = "Timed seconds at least, per configuration (default 1 s)."
STABLE_HELP = ("Figures that repeat on a shared machine: at least 400 runs in 80 rounds over 10 processes, and "
               "1-thread runs timed by the thread's CPU time, not the wall clock (time other processes hold the "
               "core is left out).")
PROCESSES_HELP = ("Fresh harness processes per bench, one after another, each with its share of the runs (default 6, "
                  "10 with --stable): the p50's interval is over their medians, so it covers a rerun. 1: one "
                  "process, its interval over its rounds (covers that process only).")


def device_profiles(device: str) -> list[Any]:
    """`--device rpi4,local` as loaded profiles."""
    from edgekit.devices.profiles import load_profile

    return [load_profile(name) for name in parse_list(device, "--device", str, "rpi4,local") or ()]


def bench_options(runtime: Runtime, threads: str | None, warmup: int | None = None,
                  warmup_seconds: float | None = None, runs: int | None = None, min_seconds: float | None = None,
                  cores: str | None = None, op_profile: bool = False, stable: bool = False,
                  processes: int | None = None) -> Any:
    """BenchOptions from the timing flags (benchmark.host.bench_options holds the defaults and rules)."""
    from edgekit.benchmark.host import bench_options as options_from

    return options_from(runtime=runtime.value, threads=parse_list(threads, "--threads", int, "1,2,4", lo=1, hi=1024),
                        warmup_runs=warmup, warmup_seconds=warmup_seconds, runs=runs, min_seconds=min_seconds,
                        cores=cores, op_profile=op_profile, stable=stable, processes=processes)


@user_errors
def bench(
    target: Annotated[Path, typer.Argument(
        metavar="ARTIFACT|FILE", help="An artifact directory (all its .tflite/.onnx files), or one file.")],
    device: Annotated[str, typer.Option("--device", "-d", help=DEVICE_HELP)] = "local",
    runtime: Annotated[Runtime, typer.Option(
        help="The runtime to time the files with; auto: each file's own (.tflite: TFLite, .onnx: ONNX Runtime).")
    ] = Runtime.auto,
    threads: Annotated[str | None, typer.Option(help="Thread counts, e.g. 1,2,4 (default: the profile's).")] = None,
    warmup: Annotated[int | None, typer.Option(help=WARMUP_HELP)] = None,
    warmup_seconds: Annotated[float | None, typer.Option(help=WARMUP_SECONDS_HELP)] = None,
    runs: Annotated[int | None, typer.Option(help=RUNS_HELP)] = None,
    min_seconds: Annotated[float | None, typer.Option(help=MIN_SECONDS_HELP)] = None,
    cores: Annotated[str | None, typer.Option(
        help="Hex CPU mask to pin to, e.g. f0 for the big cores of a 4+4 phone (default: the profile's).")] = None,
    op_profile: Annotated[bool, typer.Option(
        "--op-profile", help="Per-operator times (ONNX Runtime's profiler; benchmark_model's op profiling).")] = False,
    stable: Annotated[bool, typer.Option("--stable", help=STABLE_HELP)] = False,
    processes: Annotated[int | None, typer.Option(help=PROCESSES_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Latency on a device, measured like TFLite's benchmark_model: load, first run, warm-up, then steady state.

    Configurations (files x thread counts) run interleaved in rounds, so drift hits all alike, in several fresh
    processes one after another; the processes' medians give each p50 a confidence interval ("p50 CI", "+-%") that
    covers a rerun, and a figure too noisy to compare is warned about. The
    figures are appended to the artifact's manifest.json. Exit code 1 when a device could not be benchmarked.

    `edgekit guidelines` measures ShuffleNetV2's speed guidelines on a device; `edgekit latency calibrate` builds the
    device's latency table for the predictor.
    """
    from edgekit.benchmark.host import bench_target

    options = bench_options(runtime, threads, warmup, warmup_seconds, runs, min_seconds, cores, op_profile, stable,
                            processes)
    profiles = device_profiles(device)
    with status_line(err_console, f"benchmarking on {', '.join(p.name for p in profiles)}") as status:
        def done(outcome: Any, profile: Any) -> None:
            status.update(f"{profile.name}: {'failed' if isinstance(outcome, EdgekitError) else 'done'}")

        runs_done, failures = bench_target(target, profiles, options, on_done=done)
    if as_json:
        print_json({"runs": [vars(r) for r in runs_done],
                     "failures": [{"device": p.name, "error": str(e)} for p, e in failures]})
    else:
        _print_bench(runs_done)
        for profile in profiles:
            console.print(f"{profile.name}: profile {profile.source or 'built in'}", highlight=False)
    for profile, error in failures:
        err_console.print(f"[bold red]error:[/] {profile.name}: {escape(str(error))}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)


def _print_bench(runs: list[Any]) -> None:
    table = Table(title="latency (ms)")
    for col in ("device", "file", "runtime", "threads", "load", "first", "mean", "std", "min", "p50", "p50 CI",
                "+-%", "p90", "p99", "max", "runs", "RSS MB", "XNNPACK"):
        table.add_column(col, justify="left" if col in ("device", "file", "runtime") else "right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for run in runs:
        for r in run.results:
            s, d = r["steady"], r.get("delegation", {})
            xnn = f"{d['delegated']}/{d['nodes']}" if "nodes" in d else "-"
            rss = r.get("rss_load_mb", r.get("memory_overall_mb"))
            rep = r.get("repeat", {})
            ci = "-" if "p50_ci_ms" not in rep else f"{rep['p50_ci_ms'][0]:.2f}-{rep['p50_ci_ms'][1]:.2f}"
            noise = "-" if "noise_pct" not in rep else f"{rep['noise_pct']:.1f}"
            noise = noise if rep.get("repeatable", True) else f"[yellow]{noise}[/]"
            clock = " (cpu)" if r.get("clock") == "cpu" else ""
            table.add_row(run.device, r["file"], f"{r['runtime']} {r.get('runtime_version') or ''}".strip(),
                          str(r["threads"]) + clock, ms(r.get("load_ms")), ms(r.get("first_ms")), ms(s["mean_ms"]),
                          ms(s["std_ms"]), ms(s["min_ms"]), ms(s["p50_ms"]), ci, noise, ms(s["p90_ms"]),
                          ms(s["p99_ms"]), ms(s["max_ms"]), str(s["count"]), "-" if rss is None else f"{rss:.1f}", xnn)
    console.print(table)
    for run in runs:
        where = run.info.get("cpu_model") or run.info.get("model") or "?"
        console.print(f"{run.device}: {where}, {run.info.get('arch', '?')}, {run.info.get('cores', '?')} cores, "
                      f"runner peak RSS {run.info.get('peak_rss_mb', 0):.0f} MB", highlight=False)
        for warning in run.warnings:
            warn(f"{run.device}: {warning}")
        for r in run.results:
            for warning in r.get("warnings", []):
                warn(f"{run.device} {r['file']} x{r['threads']}: {warning}")
            if r.get("op_profile"):
                ops = ", ".join(f"{op} {t:.3f}" for op, t in list(r["op_profile"]["by_op_type_ms"].items())[:6])
                console.print(f"{run.device} {r['file']} x{r['threads']} ms per op type: {ops}", highlight=False)


devices_app = typer.Typer(help="Device profiles: list them, or check one (`edgekit devices check NAME`).",
                          invoke_without_command=True, no_args_is_help=False)


@devices_app.callback()
@user_errors
def devices_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List the device profiles edgekit can find (devices/*.yaml, your edgekit directory, $EDGEKIT_DEVICES)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.devices.profiles import LOCAL, find_profiles, read_profile, search_path

    shadowed: list[Path] = []
    profiles, problems = {"local": LOCAL}, []
    for name, path in find_profiles(shadowed).items():
        try:
            profiles[name] = read_profile(path)
        except EdgekitError as exc:  # one bad file must not hide the good ones
            problems.append(str(exc))
    rows = [{"name": name, "transport": p.transport, "arch": p.arch, "threads": list(p.threads), "cores": p.cores,
             "description": p.description, "file": str(p.source) if p.source else None}
            for name, p in profiles.items()]
    for path in shadowed:
        problems.append(f"{path} is ignored: it would replace the built-in {path.stem}; name it by path "
                        f"(--device {path}) or put its folder on $EDGEKIT_DEVICES.")
    if as_json:
        print_json(rows)
    else:
        table = Table(title="devices")
        for col in ("name", "transport", "arch", "threads", "cores", "description", "from"):
            table.add_column(col)
        for row in rows:
            table.add_row(row["name"], row["transport"], row["arch"] or "-", ",".join(map(str, row["threads"])),
                          row["cores"] or "-", row["description"], row["file"] or "built in")
        console.print(table)
        console.print("looked in: " + ", ".join(str(d) for d in search_path()), highlight=False)
    for problem in problems:
        warn(problem)


@devices_app.command("check")
@user_errors
def devices_check(
    name: Annotated[str, typer.Argument(help="A device profile name (or a profile .yaml).")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Reach a device and probe it: arch, CPU, cores, Python, runtimes, governor, free space. Exit 1 if unusable."""
    from edgekit.devices.doctor import check_device
    from edgekit.devices.profiles import load_profile

    profile = load_profile(name)
    checks, info = check_device(profile)
    failed = [c for c in checks if not c.ok and c.required]
    if as_json:
        print_json({"device": profile.name, "ok": not failed, "checks": [c.to_dict() for c in checks],
                     "info": info})
    else:
        table = Table(title=f"{profile.name} ({profile.transport})")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col)
        for c in checks:
            status = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.required else "[yellow]advice[/]")
            table.add_row(c.name, status, c.detail, c.fix)
        console.print(table)
    if failed:
        raise typer.Exit(1)
