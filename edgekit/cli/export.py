"""`edgekit export` (FP32 and INT8 ONNX/TFLite with parity) and `edgekit inspect` (a model file, or an artifact's
files against its manifest)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.cli.common import (
    JSON_HELP,
    console,
    err_console,
    millions,
    parse_list,
    parse_options,
    print_json,
    user_errors,
    warn,
)
from edgekit.core.ui import status_line
from edgekit.options import CALIBRATION_METHODS, DEFAULT_CALIBRATION_SIZE, DEFAULT_QAT_LR
from edgekit.runtime.formats import FORMATS

CalibMethod = Enum("CalibMethod", {m: m for m in CALIBRATION_METHODS}, type=str)  # the choices, from the options


@user_errors
def export(
    target: Annotated[str, typer.Argument(
        metavar="MODEL|CHECKPOINT|MODULE:CALLABLE|PROGRAM.pt2",
        help="A model name (see `edgekit models`), an edgekit checkpoint such as runs/NAME/best.pt, your own model "
             "as MODULE:CALLABLE (a function or class returning a torch.nn.Module, imported with the current "
             "directory on the path, as `python -m` does), or a program saved with torch.export.save (.pt2).")],
    input_shape: Annotated[str | None, typer.Option(
        "--input-shape", help="Your own model's input, N,C,H,W with N = 1, e.g. 1,3,224,224 (a .pt2 records "
        "its own).")] = None,
    width: Annotated[float | None, typer.Option(help="Width multiplier (default 1.0).")] = None,
    resolution: Annotated[int | None, typer.Option(help="Input height and width in pixels.")] = None,
    res_mult: Annotated[float | None, typer.Option("--res-mult", help="Resolution multiplier rho.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classifier outputs (default 1000).")] = None,
    in_channels: Annotated[int | None, typer.Option(help="Input channels (1 for grayscale; default 3).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Family option KEY=VALUE.")] = None,
    weights: Annotated[
        Path | None, typer.Option(help="An edgekit checkpoint or a torchvision state_dict (loaded strictly).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Comma-separated: onnx, tflite.")] = "onnx,tflite",
    nhwc: Annotated[
        bool, typer.Option("--nhwc", help="TFLite takes channels-last input (no layout TRANSPOSE).")
    ] = False,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch", help="ONNX input with a dynamic batch axis.")
    ] = False,
    eval_data: Annotated[str | None, typer.Option(
        "--eval", help="Also measure top-1 of every format on this data's validation split "
        "(fashion-mnist, digits, imagefolder:PATH; 'auto' = the checkpoint's own data).")] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also write full-integer model_int8.onnx and model_int8.tflite (post-training, or "
        "quantization-aware with --qat-epochs).")] = False,
    calib: Annotated[str | None, typer.Option(
        help="Calibration images: a folder of photos in any layout (no labels needed), imagefolder:DIR (its train/ "
        "split, any classes), fashion-mnist or digits (default: the checkpoint's own data).")] = None,
    calib_size: Annotated[int, typer.Option(help="Calibration images, drawn with a fixed seed.")] = (
        DEFAULT_CALIBRATION_SIZE),
    calib_method: Annotated[CalibMethod, typer.Option(
        help="Activation ranges: minmax, percentile (99.99th) or mse (histogram L2 search).")] = CalibMethod.minmax,
    per_tensor: Annotated[bool, typer.Option(
        "--per-tensor", help="One weight scale per tensor instead of per channel (to see why per-channel "
        "matters).")] = False,
    equalize: Annotated[bool, typer.Option(
        "--equalize", help="Cross-layer equalization before calibration: rescale convolution pairs joined by a "
        "ReLU (or nothing) so that per-tensor weight scales fit every channel. Exact; ReLU6 pairs are left alone.")
    ] = False,
    int8_io: Annotated[bool, typer.Option(
        "--int8-io", help="INT8 TFLite takes and returns int8 tensors (scale and zero point in the manifest).")
    ] = False,
    qat_epochs: Annotated[int, typer.Option(
        "--qat-epochs", help="Quantization-aware: fine-tune the fake-quantized model this many epochs on the "
        "training data before export (0 = post-training only).")] = 0,
    qat_lr: Annotated[float, typer.Option(
        "--qat-lr", help="Quantization-aware learning rate (SGD, cosine decay).")] = DEFAULT_QAT_LR,
    max_drop: Annotated[float | None, typer.Option(
        "--max-drop", help="Largest allowed INT8 top-1 drop on --eval data, in percentage points (as on `check`), "
        "met here by keeping the most sensitive layers in float (accuracy-aware).")] = None,
    out: Annotated[Path | None, typer.Option(help="Artifact directory (default out/NAME-wW-rR).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing artifact directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Export a model to ONNX and TFLite (FP32, and INT8 with --int8), check numerical parity, write an
    artifact directory.

    With an edgekit checkpoint, parity runs on real validation images, the preprocessing is recorded and
    --int8 calibrates on the checkpoint's training data. Your own model: `edgekit export my_pkg.models:build_net
    --input-shape 1,3,224,224 [--weights w.pt] --int8 --calib imagefolder:DIR`.
    """
    from edgekit.exporting.pipeline import export_source
    from edgekit.exporting.source import resolve_source
    from edgekit.options import ExportOptions, int8_from_flags

    options = ExportOptions(
        formats=tuple(parse_list(format, "--format", str.lower, "onnx,tflite") or ()), nhwc=nhwc,
        dynamic_batch=dynamic_batch,
        int8=int8_from_flags(int8, calib, calib_size=calib_size, calib_method=calib_method.value,
                             per_tensor=per_tensor, equalize=equalize, int8_io=int8_io, qat_epochs=qat_epochs,
                             qat_lr=qat_lr, max_drop=max_drop))
    source = resolve_source(target, width, resolution, res_mult, num_classes, in_channels,
                            parse_options(option or []) or None, weights, input_shape)
    spec = source.spec
    with status_line(err_console, "exporting") as status:
        result = export_source(
            source, options, out=out, force=force, eval_data=eval_data, calib=calib,
            on_stage=lambda stage: status.update(f"{stage} ..."), on_status=status.update, on_warning=warn)
    manifest = result.manifest
    if as_json:
        print_json({"directory": str(result.directory), **manifest.to_dict()})
        return
    accuracy = manifest.accuracy or {}
    table = Table(title=f"exported {spec.name} -> {result.directory}")
    columns = ["format", "file", "size", "params", "MACs", "max rel diff", "cosine", "top-1 agree"]
    columns += ["val top-1"] if accuracy else []
    for col in (*columns, "ops", "time"):
        table.add_column(col, justify="left" if col in ("format", "file", "ops") else "right")
    if accuracy:
        table.caption = f"val top-1 on {accuracy['images']:,} images of {accuracy['data']}; torch " \
                        f"{accuracy['top1']['torch']:.2%}"
    for fmt, record in manifest.files.items():
        if fmt not in manifest.parity["results"]:
            continue
        parity = manifest.parity["results"][fmt]
        ops = ", ".join(f"{op} {n}" for op, n in manifest.ops[fmt]["histogram"].items())
        row = [
            fmt, record.file, f"{record.bytes / 2**20:.2f} MiB", f"{manifest.complexity['params']:,}",
            millions(manifest.complexity["macs"]), f"{parity['max_rel_diff']:.1e}",
            f"{parity['min_cosine']:.6f}", f"{parity['top1_agreement']:.0%}",
        ]
        row += [f"{accuracy['top1'][fmt]:.2%}"] if accuracy else []
        table.add_row(*row, ops, f"{result.timings.get(f'export {fmt}', 0):.1f}s")
    console.print(table)
    if manifest.int8:
        _print_int8(manifest, result.timings)


def _print_int8(manifest: Any, timings: dict[str, float]) -> None:
    section = manifest.int8
    calibration = section["calibration"]
    qat = section.get("qat")
    tuned = f", then {qat['epochs']} quantization-aware epoch(s) in {qat['seconds']:.0f} s" if qat else ""
    table = Table(title=f"INT8 ({section['scheme']['weights']} weights, {calibration['method']} calibration on "
                        f"{calibration['images']:,} images of {calibration.get('data') or 'noise'}{tuned})")
    accuracy = section.get("accuracy")
    columns = ["format", "file", "size", "vs torch int8 (cosine)", "full integer", "ops"]
    columns[4:4] = ["val top-1", "drop"] if accuracy else []
    for col in (*columns, "time"):
        table.add_column(col, justify="left" if col in ("format", "file", "ops") else "right")
    results = section["parity"]["results"]
    for fmt in FORMATS:
        record = manifest.files.get(f"{fmt}_int8")
        if record is None:
            continue
        graph = section["graph"][fmt]
        histogram = graph.get("onnxruntime_fused") or graph["histogram"]  # ONNX: the ops as ONNX Runtime runs them
        full = graph.get("full_integer")
        row = [f"{fmt} int8", record.file, f"{record.bytes / 2**20:.2f} MiB",
               f"{results[f'{fmt}_int8_vs_torch_int8']['min_cosine']:.4f}"]
        if accuracy:
            row += [f"{accuracy['top1'][f'{fmt}_int8']:.2%}", f"{accuracy['drop_pp'][f'{fmt}_int8']:+.2f} pp"]
        row += ["yes" if full else ("n/a" if full is None else "no"),
                ", ".join(f"{op} {n}" for op, n in histogram.items()),
                f"{timings.get(f'int8 export {fmt}', 0):.1f}s"]
        table.add_row(*row)
    if accuracy:
        table.caption = (f"FP32 torch {accuracy['top1']['torch_fp32']:.2%} on {accuracy['images']:,} images; "
                         f"ONNX/TFLite top-1 agreement {accuracy.get('onnx_tflite_top1_agreement', 1.0):.2%}; "
                         "ONNX ops as ONNX Runtime runs them")
    console.print(table)
    aware = section.get("accuracy_aware")
    if aware:
        layers = aware["float_layers"]
        chosen = [layer["module"] for layer in layers if layer["why"].startswith("chosen")]
        console.print(
            f"accuracy-aware (--max-drop {aware['budget_pp']:g} pp): "
            + (f"{len(chosen)} layer(s) kept in float ({', '.join(chosen)}); {len(layers)} run in float with "
               f"their producers, {aware['float_macs_share']:.1%} of MACs. See "
               "manifest.json int8.accuracy_aware." if layers else "full INT8 is within budget, no layer in float."),
            highlight=False)
        if aware.get("ranking"):
            top = ", ".join(f"{r['module']} {r['recovered_pp']:+.2f} pp" for r in aware["ranking"][:5])
            console.print(f"sensitivity (top-1 recovered with the layer alone in float, on "
                          f"{aware['ranking_images']:,} images at most): {top}", highlight=False)


@user_errors
def inspect_cmd(
    file: Annotated[Path, typer.Argument(
        metavar="FILE|DIR", help="An .onnx or .tflite file; with --verify, an artifact or run directory.")],
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check every file the manifest lists against its recorded size and sha256; "
                         "exit 1 when one changed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Inputs, outputs (shapes, dtypes, quantization), op histogram and size of a model file."""
    from edgekit.inspect import inspect_file

    if verify:
        _verify_artifact(file, as_json)
        return
    info = inspect_file(file)
    if as_json:
        print_json(info)
        return
    console.print(f"[bold]{info['file']}[/]  {info['format']}  {info['bytes'] / 2**20:.2f} MiB")
    io_table = Table(title="inputs and outputs")
    for col in ("kind", "name", "shape", "dtype", "quantization"):
        io_table.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = t.get("quantization")
            io_table.add_row(kind[:-1], t["name"], "x".join(map(str, t["shape"])), t["dtype"],
                             f"scale {q['scale']:.6g}, zero point {q['zero_point']}" if q else "")
    console.print(io_table)
    meta = info.get("metadata")
    if meta:
        labels = meta["labels"]
        shown = "none" if not labels else ", ".join(labels[:5]) + (f", ... ({len(labels)})" if len(labels) > 5
                                                                    else "")
        console.print(f"TFLite metadata: {meta['name']} {meta['version']}, input {meta['resolution']} px x "
                      f"{meta['channels']}, normalization (x - {list(meta['mean'])}) / {list(meta['std'])} on "
                      f"[0, 255], labels: {shown}", highlight=False)
    needs = info.get("onnxruntime_needs")
    if needs:
        entries = ", ".join(f"{k}={v}" for k, v in needs["session_config"].items())
        console.print(f"ONNX Runtime: on {needs['when']}, open it with the session config entry {entries} "
                      "(SessionOptions.add_session_config_entry); edgekit's own sessions add it.", highlight=False)
        ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info["ops"].items():
        ops.add_row(op, str(n))
    console.print(ops)


def _verify_artifact(path: Path, as_json: bool) -> None:
    from edgekit.artifact import changed_files, locate_artifact
    from edgekit.manifest import read_manifest

    directory = locate_artifact(path)
    manifest = read_manifest(directory)
    problems = dict(changed_files(directory, manifest))
    rows = [{**r.to_dict(), "ok": r.file not in problems, "problem": problems.get(r.file)}
            for r in manifest.files.values()]
    if as_json:
        print_json({"artifact": str(directory), "ok": not problems, "files": rows})
    else:
        table = Table(title=f"{directory}: files against manifest.json")
        for col in ("file", "bytes", "sha256", "status"):
            table.add_column(col, justify="right" if col == "bytes" else "left")
        for row in rows:
            status = "[green]ok[/]" if row["ok"] else f"[red]{escape(row['problem'])}[/]"
            table.add_row(row["file"], f"{row['bytes']:,}", row["sha256"][:16], status)
        console.print(table)
    if problems:
        err_console.print(f"[bold red]verify failed:[/] {len(problems)} of {len(rows)} files changed since export; "
                          "export the model again.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
