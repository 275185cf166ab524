"""What the export CLIs need before torch is imported: the package check and the shared arguments, so that
`--help` and the "missing packages" message work on a machine without the Python ML stack."""
from __future__ import annotations

import argparse
import importlib.util
import sys

# Import names of what the recipe runs on (pip names: torch, diffusers, transformers, onnx, onnxruntime; diffusers
# also needs safetensors and huggingface_hub, which it installs itself).
REQUIRED_MODULES = ("torch", "diffusers", "transformers", "onnx", "onnxruntime", "numpy")
MIN_OPSET = 17
DEFAULT_ATOL_FP32 = 1e-3
DEFAULT_ATOL_FP16 = 5e-2


def missing_modules() -> list[str]:
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def import_recipe():
    """The export_common module, or exit 2 naming the packages to install."""
    missing = missing_modules()
    if missing:
        print(
            f"error: the export recipe needs {', '.join(missing)} (not importable by {sys.executable}). Install them, "
            "e.g. `pip install torch diffusers transformers onnx onnxruntime`, or put a diffusers source tree on "
            "PYTHONPATH (see tools/export/README.md).",
            file=sys.stderr,
        )
        sys.exit(2)
    import export_common  # noqa: PLC0415 - deliberately late: it imports torch

    return export_common


def opset(text: str) -> int:
    value = int(text)
    if value < MIN_OPSET:
        raise argparse.ArgumentTypeError(f"opset must be {MIN_OPSET} or higher (the project's convention), got {value}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="local diffusers pipeline folder (SD 1.x or SDXL): model_index.json, unet/, vae/, text_encoder/, …")
    parser.add_argument("--output", "-o", required=True, help="folder to write the ONNX pipeline into (component folders in it are replaced)")
    parser.add_argument("--fp16", action="store_true", help="export float16 weights and float inputs (needs --device cuda); default float32")
    parser.add_argument("--device", default="cpu", help="torch device to trace on: cpu (default) or cuda")
    parser.add_argument("--variant", help="weights variant of the pipeline folder to load, e.g. fp16 for *.fp16.safetensors")
    parser.add_argument("--opset", type=opset, default=MIN_OPSET, help=f"ONNX opset, {MIN_OPSET} or higher (default {MIN_OPSET})")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="run every exported model with onnxruntime against torch on random inputs of another batch size and "
        "picture size than the traced ones, print the max abs differences, and exit 1 if one exceeds --atol",
    )
    parser.add_argument(
        "--atol",
        type=float,
        help=f"largest accepted max abs difference for --verify (default {DEFAULT_ATOL_FP32:g}, {DEFAULT_ATOL_FP16:g} with --fp16)",
    )
