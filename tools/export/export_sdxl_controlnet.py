#!/usr/bin/env python3
"""Export a diffusers SDXL pipeline folder and one or more SDXL ControlNets (diffusers' ControlNetModel) to this
project's ONNX layout: controlnet/ (and controlnet_1/, … for more) giving down_block_res_sample_0 … and
mid_block_res_sample, a UNet taking them as down_block_additional_residual_0 … and mid_block_additional_residual, and
the pipeline's other components (text encoders, VAE encoder/decoder, tokenizers, scheduler, model_index.json).
An SD 1.x pipeline with SD 1.x ControlNets exports the same way (timestep float32 [B] instead of int64 scalar).

example:
  python3 tools/export/export_sdxl_controlnet.py ./sdxl --controlnet diffusers/controlnet-canny-sdxl-1.0 \\
      --output ./sdxl-canny-onnx --verify
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli_support import add_common_arguments, import_recipe

# The conditioning scale --verify runs the ControlNet at: not 1, so that a scale dropped from the graph shows.
VERIFY_CONDITIONING_SCALE = 0.7


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_sdxl_controlnet.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument(
        "--controlnet",
        action="append",
        required=True,
        metavar="FOLDER_OR_REPO",
        help="a diffusers ControlNetModel (folder or Hugging Face repo id) made for this UNet; repeat the option for "
        "several, written to controlnet/, controlnet_1/, … in that order",
    )
    parser.add_argument("--controlnet-variant", help="weights variant of the ControlNet(s), e.g. fp16")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe = import_recipe()
    try:
        return export(args, recipe)
    except recipe.ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def controlnet_folder(index: int) -> str:
    """diffusers' MultiControlNetModel.save_pretrained layout, which the project loads: controlnet, controlnet_1, …"""
    return "controlnet" if index == 0 else f"controlnet_{index}"


def export(args: argparse.Namespace, recipe) -> int:
    import torch  # noqa: PLC0415 - importable once import_recipe succeeded

    settings = recipe.Settings.from_args(args)
    source = recipe.load_pipeline(args.model, settings, args.variant)
    pipe = source.pipe
    residual_count = recipe.unet_down_residual_count(pipe.unet)
    controlnets = []
    for reference in args.controlnet:
        print(f"loading the ControlNet {reference} …")
        module = recipe.ControlNetExport(recipe.load_controlnet(reference, settings, args.controlnet_variant)).eval()
        if module.sdxl != source.sdxl or module.down_count != residual_count:
            kind = "an SDXL" if module.sdxl else "an SD 1.x"
            raise recipe.ExportError(
                f"{reference} is {kind} ControlNet with {module.down_count} down-block residuals; the UNet of {args.model} "
                f"({'SDXL' if source.sdxl else 'SD 1.x'}) takes {residual_count}: it was made for another UNet"
            )
        controlnets.append(module)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    verifier = recipe.Verifier(settings) if args.verify else None
    sizes = recipe.latent_sizes(pipe.unet)
    recipe.export_pipeline_components(source, out, settings, sizes, verifier)

    unet = recipe.UNetExport(pipe.unet, residuals=residual_count).eval()
    trace_inputs = unet.example_inputs(2, sizes.trace, recipe.seeded(0))
    verify_inputs = unet.example_inputs(3, sizes.verify, recipe.seeded(1))
    with torch.no_grad():
        for index, module in enumerate(controlnets):
            folder = recipe.fresh_folder(out / controlnet_folder(index))
            path = recipe.export_onnx(module, module.example_inputs(trace_inputs, recipe.seeded(0)), folder, settings)
            module.c.save_config(str(folder))
            if verifier:
                inputs = module.example_inputs(verify_inputs, recipe.seeded(1), VERIFY_CONDITIONING_SCALE)
                verifier.compare_module(f"{folder.name} (conditioning_scale {VERIFY_CONDITIONING_SCALE})", module, path, inputs)

        # The UNet is traced and verified with real residuals: the first ControlNet's outputs for the same inputs.
        def with_residuals(unet_inputs: dict, seed: int, scale: float) -> dict:
            first = controlnets[0]
            residuals = first(*first.example_inputs(unet_inputs, recipe.seeded(seed), scale).values())
            return {**unet_inputs, **dict(zip(unet.residual_names, residuals, strict=True))}

        folder = recipe.fresh_folder(out / "unet")
        path = recipe.export_onnx(unet, with_residuals(trace_inputs, 0, 1.0), folder, settings)
        pipe.unet.save_config(str(folder))
        if verifier:
            inputs = with_residuals(verify_inputs, 1, VERIFY_CONDITIONING_SCALE)
            label = "unet (with a ControlNet's residuals)"
            verifier.compare(label, [unet.diffusers_output(inputs)], verifier.run(path, inputs, label))

    recipe.write_model_index(source, out, [controlnet_folder(index) for index in range(len(controlnets))])
    recipe.print_written(out)
    return verifier.finish() if verifier else 0


if __name__ == "__main__":
    sys.exit(main())
