"""`edgekit models` and `edgekit profile`: what each model costs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from edgekit.cli.common import JSON_HELP, console, millions, parse_options, print_json, user_errors


@user_errors
def models(
    family: Annotated[str | None, typer.Option(help="Only this family, e.g. MobileNetV3 (case-insensitive).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List the registered models with their default resolution, params and MACs."""
    from edgekit.models.complexity import model_table

    rows = model_table(family)
    if as_json:
        print_json(rows)
        return
    table = Table(title="edgekit models (MACs at the default resolution, 1000 classes)")
    for col, kw in (("name", {}), ("family", {}), ("res", {"justify": "right"}), ("params", {"justify": "right"}),
                    ("MACs", {"justify": "right"}), ("notes", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for r in rows:
        table.add_row(r["name"], r["family"], str(r["resolution"]), f"{r['params']:,}", millions(r["macs"]),
                      r["description"])
    console.print(table)
    console.print("Any model takes --width W and --resolution R (or --res-mult RHO); see `edgekit profile --help`.")


@user_errors
def profile(
    name: Annotated[str, typer.Argument(help="Model name, e.g. mobilenet_v2 (see `edgekit models`).")],
    width: Annotated[float, typer.Option(help="Width multiplier (channels x W, rounded as the family does).")] = 1.0,
    resolution: Annotated[
        int | None, typer.Option(help="Input height and width in pixels (default: the model's).")
    ] = None,
    res_mult: Annotated[
        float | None, typer.Option("--res-mult", help="Resolution multiplier rho of the default resolution.")
    ] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (1 for grayscale).")] = 3,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Family option KEY=VALUE, repeatable, e.g. -o groups=8."),
    ] = None,
    all_ops: Annotated[
        bool, typer.Option("--all-ops", help="One row per operator instead of fusing conv+BN+activation.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (params, macs, layers, ...).")] = False,
) -> None:
    """Layer-by-layer params, MACs and activation memory of a model."""
    from edgekit.models.complexity import profile_spec

    prof = profile_spec(
        name, width=width, resolution=resolution, res_mult=res_mult, num_classes=num_classes,
        in_channels=in_channels, fuse=not all_ops, **parse_options(option or []),
    )
    if as_json:
        print_json(prof.to_dict())
        return
    spec = prof.spec or {}
    table = Table(
        title=f"{name}  width {spec.get('width', width):g}  input {'x'.join(map(str, prof.input_shape))}",
        caption="MACs: conv + linear multiply-accumulates (FLOPs = 2 x MACs). Elementwise: other arithmetic ops. "
        "Memory: each layer's output activations.",
    )
    for col in ("layer", "op", "in CxHxW", "out CxHxW", "kernel", "params (K)", "MACs (M)", "elementwise (K)",
                "fp32 KB", "int8 KB"):
        justify = "left" if col in ("layer", "op", "kernel") else "right"
        table.add_column(col, justify=justify, overflow="fold")
    for layer in prof.layers:
        table.add_row(
            layer.name, layer.op, "x".join(map(str, layer.input_shape)), "x".join(map(str, layer.output_shape)),
            layer.detail, f"{layer.params / 1e3:,.1f}" if layer.params else "",
            f"{layer.macs / 1e6:,.2f}" if layer.macs else "",
            f"{layer.elementwise_ops / 1e3:,.1f}" if layer.elementwise_ops else "",
            f"{layer.activation_bytes_fp32 / 1024:,.1f}", f"{layer.activation_bytes_int8 / 1024:,.1f}",
        )
    console.print(table)
    summary = Table(title="totals", show_header=False)
    summary.add_column(justify="left")
    summary.add_column(justify="right")
    summary.add_row("params", f"{prof.params:,}")
    summary.add_row("MACs", f"{prof.macs:,} ({millions(prof.macs)}, {prof.flops / 1e9:.2f} GFLOPs)")
    summary.add_row("elementwise ops", f"{prof.elementwise_ops:,}")
    act_mib = prof.activation_bytes_fp32 / 2**20
    summary.add_row("activation memory (all outputs)", f"{act_mib:,.2f} MiB fp32 / {act_mib / 4:,.2f} MiB int8")
    summary.add_row("largest layer in+out (fp32)", f"{prof.peak_layer_bytes_fp32 / 2**20:,.2f} MiB")
    summary.add_row("weights", f"{prof.params * 4 / 2**20:,.2f} MiB fp32 / {prof.params / 2**20:,.2f} MiB int8")
    console.print(summary)


@user_errors
def weights(
    model: Annotated[str | None, typer.Argument(help="Only this model, e.g. mobilenet_v3_small.")] = None,
    download: Annotated[bool, typer.Option(
        "--download", help="Download the listed files into the cache now (checked), e.g. before going offline."
    )] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Pretrained weights by name: what `--weights imagenet` loads for each model, and whether it is cached.

    Each row is a file torchvision publishes, with the top-1 it reports and the evaluation transform that top-1 was
    measured with. Files are downloaded once into $EDGEKIT_HOME/weights and checked against their sha256.
    EDGEKIT_OFFLINE=1 refuses downloads; EDGEKIT_WEIGHTS_MIRROR=URL fetches the same file names from a mirror."""
    from edgekit.weights import listed

    rows = listed(model, download=download)
    if as_json:
        print_json(rows)
        return
    table = Table(title="published weights (ImageNet-1k top-1 as their authors report it)")
    for col in ("model", "--weights", "top-1", "eval transform", "cached"):
        table.add_column(col, justify="right" if col == "top-1" else "left")
    for r in rows:
        table.add_row(r["model"], r["weights"], f"{r['top1']:.1f}%",
                      f"resize {r['resize']} {r['interpolation']}, crop {r['crop']}", "yes" if r["cached"] else "")
    console.print(table)
    console.print("Models without published weights train from scratch, or load yours: --weights FILE.")
