#!/usr/bin/env python3
"""Export a diffusers SD 1.x or SDXL pipeline folder with an IP-Adapter (the original "proj" kind: ip-adapter_sd15.bin,
ip-adapter_sdxl.bin, ip-adapter_sdxl_vit-h.bin) to this project's ONNX layout: the adapter is built into the UNet,
which takes `image_embeds` [B,1,D] and `ip_adapter_scale` [1] as inputs (scale 0 equals running without the adapter),
beside image_encoder/, feature_extractor/ and the pipeline's other components (text encoders, VAE encoder/decoder,
tokenizers, scheduler, model_index.json).

example:
  python3 tools/export/export_ipadapter.py ./sd15 --ip-adapter h94/IP-Adapter --subfolder models \\
      --weight-name ip-adapter_sd15.bin --output ./sd15-ipadapter-onnx --verify
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli_support import add_common_arguments, import_recipe

# The scale --verify compares at (besides 0): not 1, so that a scale dropped from the graph shows.
VERIFY_SCALE = 0.6


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export_ipadapter.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    adapter = parser.add_argument_group("IP-Adapter (passed to diffusers' pipeline.load_ip_adapter)")
    adapter.add_argument("--ip-adapter", required=True, metavar="FOLDER_OR_REPO", help="the adapter's folder or Hugging Face repo id, e.g. h94/IP-Adapter")
    adapter.add_argument("--subfolder", default="models", help="the weights' subfolder: models (SD 1.5, default) or sdxl_models (SDXL) in h94/IP-Adapter")
    adapter.add_argument("--weight-name", default="ip-adapter_sd15.bin", help="the weights file (default ip-adapter_sd15.bin; SDXL: ip-adapter_sdxl.bin)")
    adapter.add_argument(
        "--image-encoder-folder",
        default="image_encoder",
        help="the CLIP vision encoder: a folder inside --subfolder (default image_encoder) or a path inside --ip-adapter "
        "with a slash (e.g. models/image_encoder for ip-adapter_sdxl_vit-h.bin); a pipeline folder's own image_encoder wins",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe = import_recipe()
    try:
        return export(args, recipe)
    except recipe.ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def export(args: argparse.Namespace, recipe) -> int:
    settings = recipe.Settings.from_args(args)
    source = recipe.load_pipeline(args.model, settings, args.variant)
    pipe = source.pipe
    print(f"loading the IP-Adapter {args.ip_adapter} {args.subfolder}/{args.weight_name} …")
    pipe.load_ip_adapter(args.ip_adapter, subfolder=args.subfolder, weight_name=args.weight_name, image_encoder_folder=args.image_encoder_folder)
    unet = recipe.UNetExport(pipe.unet, ip_adapter=True).eval()
    projection_dim = pipe.image_encoder.config.projection_dim if pipe.image_encoder is not None else None
    if projection_dim != unet.image_embed_dim:
        raise recipe.ExportError(
            f"the adapter projects {unet.image_embed_dim}-wide image embeddings but the image encoder gives {projection_dim}: "
            "pick the image encoder the weights were trained with (--image-encoder-folder)"
        )

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    verifier = recipe.Verifier(settings) if args.verify else None
    sizes = recipe.latent_sizes(pipe.unet)
    recipe.export_pipeline_components(source, out, settings, sizes, verifier)
    recipe.export_image_encoder(pipe, out, settings, verifier)

    folder = recipe.fresh_folder(out / "unet")
    path = recipe.export_onnx(unet, unet.example_inputs(2, sizes.trace, recipe.seeded(0)), folder, settings)
    pipe.unet.save_config(str(folder))
    if verifier:
        verify_unet(recipe, verifier, unet, path, sizes)

    recipe.write_model_index(source, out, ["image_encoder", "feature_extractor"])
    recipe.print_written(out)
    return verifier.finish() if verifier else 0


def verify_unet(recipe, verifier, unet, path: Path, sizes) -> None:
    """The exported UNet against diffusers' own UNet call at VERIFY_SCALE and at 0 (where diffusers skips the
    adapter), and at 0 the same output whatever image_embeds are."""
    import torch  # noqa: PLC0415 - importable once import_recipe succeeded

    inputs = unet.example_inputs(3, sizes.verify, recipe.seeded(1), ip_scale=VERIFY_SCALE)
    label = f"unet (ip_adapter_scale {VERIFY_SCALE})"
    with torch.no_grad():
        on = verifier.run(path, inputs, label)
        verifier.compare(label, [unet.diffusers_output(inputs, VERIFY_SCALE)], on)

        off_inputs = {**inputs, "ip_adapter_scale": torch.zeros_like(inputs["ip_adapter_scale"])}
        label = "unet (ip_adapter_scale 0, against diffusers skipping the adapter)"
        off = verifier.run(path, off_inputs, label)
        verifier.compare(label, [unet.diffusers_output(off_inputs, 0.0)], off)

        other_embeds = recipe.randn(recipe.seeded(2), off_inputs["image_embeds"].shape, off_inputs["image_embeds"].device, off_inputs["image_embeds"].dtype)
        label = "unet (ip_adapter_scale 0, other image_embeds)"
        verifier.expect_identical(label, off, verifier.run(path, {**off_inputs, "image_embeds": other_embeds}, label))
    if on is not None and off is not None:
        effect = max(float(abs(a.astype("float64") - b.astype("float64")).max()) for a, b in zip(on, off))
        print(f"note: at ip_adapter_scale {VERIFY_SCALE} the adapter changes out_sample by up to {effect:.3g}")


if __name__ == "__main__":
    sys.exit(main())
