#!/usr/bin/env python3
"""Make an SD 1.5 or SDXL pipeline folder at real size with random weights, in this project's ONNX layout
(shared/conformance/README.md), for the GPU benchmark (packages/core/bench/gpu.bench.mjs). diffusers' and
transformers' real architectures are built from the configurations written below (those of
stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0): nothing is downloaded. Speed does not depend on the
weights' values, so random ones measure what the real models would.

Written: text_encoder/ (and text_encoder_2/), unet/, vae_decoder/ (vae_encoder/ with --vae-encoder), tokenizer/
(and tokenizer_2/), scheduler/scheduler_config.json, model_index.json. The tokenizer is a copy of
packages/model-tiny's (606 tokens; the text encoders' vocabulary is sized to it, the rest of each encoder is real).

--fp16: text encoders and UNet in float16 (traced on CUDA); the VAE stays float32 (diffusers' SDXL VAE overflows in
float16, and SD 1.5's is kept alike so that both families compare). --optimize: the UNet is exported in float32,
fused by onnxruntime.transformers.optimizer (model_type 'unet': attention, GroupNorm, BiasSplitGelu, … — contrib
operators that only the CUDA provider runs), then converted to float16 with --fp16: ONNX Runtime's own Stable
Diffusion recipe (fusions first: they do not match once the graph is float16). --reuse DIR takes every other
component from a folder this script made, so a fused UNet costs one export.

examples:
  python3 tools/gpu-bench/make_models.py --family sd15 --out /tmp/models/sd15 --fp16
  python3 tools/gpu-bench/make_models.py --family sd15 --out /tmp/models/sd15-opt --fp16 --optimize --reuse /tmp/models/sd15
  python3 tools/gpu-bench/make_models.py --family sdxl --out /tmp/models/sdxl-small --small --device cpu
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# The export recipe's modules (flat ONNX inputs, the TorchScript export, >2 GiB weights) are reused as they are.
sys.path.insert(0, str(REPO / "tools" / "export"))

from cli_support import MIN_OPSET, missing_modules, opset  # noqa: E402

DEFAULT_TOKENIZER = REPO / "packages" / "model-tiny" / "model" / "tokenizer"
TEXT_TOKENS = 77

# ---------------------------------------------------------------------------------------------------------------
# The real configurations (config.json of each component in the two Hugging Face repositories).

SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SDXL_UNET = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_VAE = {**VAE, "sample_size": 512, "scaling_factor": 0.18215}
SDXL_VAE = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
# CLIP ViT-L/14's text tower (SD 1.5's encoder, SDXL's first) and OpenCLIP ViT-bigG/14's (SDXL's second, projected).
CLIP_L = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "max_position_embeddings": TEXT_TOKENS, "hidden_act": "quick_gelu", "projection_dim": 768, "layer_norm_eps": 1e-05,
}
CLIP_BIG_G = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
    "max_position_embeddings": TEXT_TOKENS, "hidden_act": "gelu", "projection_dim": 1280, "layer_norm_eps": 1e-05,
}
SCHEDULER_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", **SCHEDULER_BETAS, "clip_sample": False, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", **SCHEDULER_BETAS, "clip_sample": False, "interpolation_type": "linear",
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}

# --small: the same block types at toy widths (the export test's tiny models), for a smoke test on any machine.
SMALL_UNET = {"block_out_channels": [32, 64], "norm_num_groups": 8, "sample_size": 8}
SMALL_SD15_UNET = {
    **SD15_UNET, **SMALL_UNET, "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
SMALL_SDXL_UNET = {
    **SDXL_UNET, **SMALL_UNET, "cross_attention_dim": 64, "attention_head_dim": [2, 4], "transformer_layers_per_block": [1, 2],
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}
SMALL_VAE = {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "layers_per_block": 1, "sample_size": 64}
SMALL_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 3, "num_attention_heads": 4, "projection_dim": 32}


@dataclass(frozen=True)
class TextEncoder:
    folder: str
    tokenizer_folder: str
    config: dict[str, Any]
    with_projection: bool
    # SDXL's second tokenizer pads with "!" (OpenCLIP's convention), the first with the end token.
    pad_token: str | None = None


@dataclass(frozen=True)
class Family:
    sdxl: bool
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: list[TextEncoder]
    scheduler: dict[str, Any]
    extra_index: dict[str, Any] = field(default_factory=dict)


def family(name: str, small: bool) -> Family:
    def clip(config: dict[str, Any]) -> dict[str, Any]:
        return {**config, **SMALL_CLIP} if small else config

    vae_size = SMALL_VAE if small else {}
    if name == "sd15":
        return Family(
            sdxl=False,
            unet=SMALL_SD15_UNET if small else SD15_UNET,
            vae={**SD15_VAE, **vae_size},
            text_encoders=[TextEncoder("text_encoder", "tokenizer", clip(CLIP_L), with_projection=False)],
            scheduler=SD15_SCHEDULER,
        )
    return Family(
        sdxl=True,
        unet=SMALL_SDXL_UNET if small else SDXL_UNET,
        vae={**SDXL_VAE, **vae_size},
        text_encoders=[
            TextEncoder("text_encoder", "tokenizer", clip(CLIP_L), with_projection=False),
            TextEncoder("text_encoder_2", "tokenizer_2", clip(CLIP_BIG_G), with_projection=True, pad_token="!"),
        ],
        scheduler=SDXL_SCHEDULER,
        extra_index={"force_zeros_for_empty_prompt": True},
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line (usable without the ML stack: --help and the missing-package message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make_models.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, choices=["sd15", "sdxl"], help="Stable Diffusion 1.5 (512 px) or SDXL base (1024 px)")
    parser.add_argument("--out", required=True, type=Path, help="pipeline folder to write (its component folders are replaced)")
    parser.add_argument("--fp16", action="store_true", help="float16 text encoders and UNet (needs CUDA); the VAE stays float32")
    parser.add_argument("--optimize", action="store_true", help="fuse the UNet with onnxruntime.transformers.optimizer (model_type 'unet'); runs on CUDA only")
    parser.add_argument("--reuse", type=Path, metavar="DIR", help="take every component but the UNet from DIR, a folder this script made for the same family")
    parser.add_argument("--small", action="store_true", help="toy widths of the same architecture, for a smoke test (runs on CPU in float32)")
    parser.add_argument("--vae-encoder", action="store_true", help="also export vae_encoder (image-to-image; the text-to-image benchmark does not use it)")
    parser.add_argument("--device", help="torch device to build and trace on (default: cuda where torch sees it, else cpu)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="CLIP tokenizer folder to copy (default: packages/model-tiny's)")
    parser.add_argument("--opset", type=opset, default=MIN_OPSET, help=f"ONNX opset, {MIN_OPSET} or higher (default {MIN_OPSET})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0): the same seed gives the same weights")
    return parser


class UsageError(Exception):
    """Arguments that cannot work together; the message says what to change."""


def check_arguments(args: argparse.Namespace) -> None:
    if not (args.tokenizer / "vocab.json").is_file():
        raise UsageError(f"--tokenizer {args.tokenizer} has no vocab.json; give a CLIP tokenizer folder (vocab.json, merges.txt, …)")
    if args.reuse is not None:
        if not (args.reuse / "model_index.json").is_file():
            raise UsageError(f"--reuse {args.reuse} is not a pipeline folder (no model_index.json); make one first without --reuse")
        if (args.reuse / "text_encoder_2").is_dir() != (args.family == "sdxl"):
            raise UsageError(f"--reuse {args.reuse} is not an {args.family} folder")
        if args.reuse.resolve() == args.out.resolve():
            raise UsageError("--reuse and --out are the same folder; write the new UNet to another one")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    needed = missing_modules()
    if needed:
        print(
            f"error: make_models.py needs {', '.join(needed)} (not importable by {sys.executable}). Install them "
            "(`pip install torch diffusers transformers onnx onnxruntime`), or, where diffusers cannot be installed, put "
            "its source on PYTHONPATH: `tar -C /tmp/diffusers -xJf shared/tools/diffusers-*-src.tar.xz "
            "--strip-components=2; export PYTHONPATH=/tmp/diffusers` (tools/gpu-bench/run-on-device.sh does this).",
            file=sys.stderr,
        )
        return 2
    import export_common  # noqa: PLC0415 - imports torch: only once the packages are known to be there

    try:
        return make(args, export_common)
    except (UsageError, export_common.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------------------
# Building and exporting


def make(args: argparse.Namespace, recipe: Any) -> int:
    import diffusers  # noqa: PLC0415
    import torch  # noqa: PLC0415

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device")
    if args.fp16 and device.type != "cuda":
        raise UsageError("--fp16 needs CUDA (torch's CPU kernels lack float16 for several operators); leave it out on CPU")
    spec = family(args.family, args.small)
    dtype = torch.float16 if args.fp16 else torch.float32
    settings = recipe.Settings(dtype, device, args.opset, 0.0)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.reuse is not None:
        reuse_components(args.reuse, out)
    else:
        vocab = Vocabulary.read(args.tokenizer)
        for index, encoder in enumerate(spec.text_encoders):
            copy_tokenizer(args.tokenizer, out / encoder.tokenizer_folder, encoder.pad_token)
            export_text_encoder(encoder, vocab, out, settings, args.seed + 10 + index, recipe)
            empty_cuda_cache(torch)
        export_vae(spec, out, recipe.Settings(torch.float32, device, args.opset, 0.0), args.seed + 1, args.vae_encoder, recipe)
        empty_cuda_cache(torch)
        write_json(out / "scheduler" / "scheduler_config.json", {**spec.scheduler, "_diffusers_version": diffusers.__version__})

    export_unet(spec, out, settings, args.seed + 2, args.optimize, recipe)
    # write_model_index names the scheduler by its object's class, as diffusers' pipelines hold one.
    scheduler = type(spec.scheduler["_class_name"], (), {})()
    recipe.write_model_index(recipe.SourcePipeline(out, SimpleNamespace(scheduler=scheduler), spec.sdxl, spec.extra_index), out, [])
    recipe.print_written(out)
    return 0


@dataclass(frozen=True)
class Vocabulary:
    size: int
    bos: int
    eos: int
    ids: dict[str, int]

    @classmethod
    def read(cls, folder: Path) -> Vocabulary:
        ids: dict[str, int] = json.loads((folder / "vocab.json").read_text())
        missing = [token for token in ("<|startoftext|>", "<|endoftext|>") if token not in ids]
        if missing:
            raise UsageError(f"{folder}/vocab.json lacks {', '.join(missing)}: not a CLIP tokenizer")
        return cls(max(ids.values()) + 1, ids["<|startoftext|>"], ids["<|endoftext|>"], ids)


def copy_tokenizer(source: Path, target: Path, pad_token: str | None) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    if pad_token is None:
        return
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = target / name
        if path.is_file():
            config = json.loads(path.read_text())
            config["pad_token"] = pad_token
            write_json(path, config)


def example_ids(vocab: Vocabulary, device: Any) -> Any:
    """Two prompts' ids as the tokenizer pads them: a few tokens, and an empty prompt (start, end, padding)."""
    import torch  # noqa: PLC0415

    rows = []
    for length in (12, 0):
        body = [(7 * i + 3) % vocab.bos for i in range(length)]
        row = [vocab.bos, *body, vocab.eos]
        rows.append(row + [vocab.eos] * (TEXT_TOKENS - len(row)))
    return torch.tensor(rows, dtype=torch.int32, device=device)


def export_text_encoder(encoder: TextEncoder, vocab: Vocabulary, out: Path, settings: Any, seed: int, recipe: Any) -> None:
    import torch  # noqa: PLC0415
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    pad = vocab.ids.get(encoder.pad_token, vocab.eos) if encoder.pad_token else vocab.eos
    config = CLIPTextConfig(**encoder.config, vocab_size=vocab.size, bos_token_id=vocab.bos, eos_token_id=vocab.eos, pad_token_id=pad)
    model_class = CLIPTextModelWithProjection if encoder.with_projection else CLIPTextModel
    torch.manual_seed(seed)
    with torch.device(settings.device):
        model = model_class(config).to(settings.dtype).eval()
    module = recipe.TextEncoderExport(model).eval()
    folder = recipe.fresh_folder(out / encoder.folder)
    recipe.export_onnx(module, {"input_ids": example_ids(vocab, settings.device)}, folder, settings)
    model.config.save_pretrained(str(folder))


def export_vae(spec: Family, out: Path, settings: Any, seed: int, with_encoder: bool, recipe: Any) -> None:
    import torch  # noqa: PLC0415
    from diffusers import AutoencoderKL  # noqa: PLC0415

    torch.manual_seed(seed)
    with torch.device(settings.device):
        vae = AutoencoderKL(**spec.vae).eval()
    factor = 2 ** (len(spec.vae["block_out_channels"]) - 1)
    side = spec.unet["sample_size"]
    generator = recipe.seeded(seed)
    parts = [("vae_decoder", recipe.VaeDecoderExport(vae).eval(), recipe.randn(generator, (1, spec.vae["latent_channels"], side, side), settings.device, torch.float32))]
    if with_encoder:
        picture = torch.rand((1, spec.vae["in_channels"], side * factor, side * factor), generator=generator) * 2 - 1
        parts.append(("vae_encoder", recipe.VaeEncoderExport(vae).eval(), picture.to(settings.device)))
    for name, module, example in parts:
        folder = recipe.fresh_folder(out / name)
        recipe.export_onnx(module, {module.input_names[0]: example}, folder, settings)
        vae.save_config(str(folder))


def export_unet(spec: Family, out: Path, settings: Any, seed: int, optimize: bool, recipe: Any) -> None:
    import torch  # noqa: PLC0415
    from diffusers import UNet2DConditionModel  # noqa: PLC0415

    # Fusions match the float32 graph only: the UNet to be optimized is exported in float32 and converted after.
    trace_settings = recipe.Settings(torch.float32, settings.device, settings.opset, 0.0) if optimize else settings
    torch.manual_seed(seed)
    with torch.device(settings.device):
        unet = UNet2DConditionModel(**spec.unet).eval()
    if trace_settings.dtype != torch.float32:
        unet.to(trace_settings.dtype)
    module = recipe.UNetExport(unet).eval()
    inputs = module.example_inputs(2, recipe.latent_sizes(unet).trace, recipe.seeded(seed))
    folder = recipe.fresh_folder(out / "unet")
    if not optimize:
        recipe.export_onnx(module, inputs, folder, trace_settings)
        unet.save_config(str(folder))
        return
    with tempfile.TemporaryDirectory(prefix="unet-fp32-", dir=out) as scratch:
        exported = recipe.export_onnx(module, inputs, Path(scratch), trace_settings)
        unet.save_config(str(folder))
        # The optimizer holds the float32 graph (3.4 GB for SD 1.5, 10 GB for SDXL) in host memory: free the GPU copy.
        del module, unet, inputs
        empty_cuda_cache(torch)
        statistics = optimize_unet(exported, folder / "model.onnx", settings.dtype == torch.float16, recipe)
    write_json(folder / "optimization.json", statistics)


def optimize_unet(source: Path, target: Path, fp16: bool, recipe: Any) -> dict[str, Any]:
    """ONNX Runtime's Stable Diffusion recipe (its models/stable_diffusion/optimize_pipeline.py): fusions on the float32
    graph by the Python optimizer alone (opt_level 0: no session, so the CPU-only onnxruntime package does it), then
    float16 everywhere, inputs and outputs included."""
    from onnxruntime.transformers.fusion_options import FusionOptions  # noqa: PLC0415
    from onnxruntime.transformers.optimizer import optimize_model  # noqa: PLC0415

    patch_num_heads_detection()
    options = FusionOptions("unet")
    # Packed K/V and Q/K/V attention inputs have float16 kernels only (as the recipe sets them).
    for name in ("enable_packed_kv", "enable_packed_qkv"):
        if hasattr(options, name):
            setattr(options, name, fp16)
    print(f"optimizing {source} (onnxruntime.transformers.optimizer, model_type unet) …", flush=True)
    model = optimize_model(str(source), model_type="unet", num_heads=0, hidden_size=0, opt_level=0, optimization_options=options, use_gpu=True)
    if fp16:
        print("converting the fused UNet to float16 …", flush=True)
        model.convert_float_to_float16(keep_io_types=False)
    fused = {name: count for name, count in model.get_fused_operator_statistics().items() if count}
    weight_bytes = sum(tensor.ByteSize() for tensor in model.model.graph.initializer)
    model.save_model_to_file(str(target), use_external_data_format=weight_bytes >= recipe.SINGLE_FILE_WEIGHT_LIMIT)
    print(f"fused operators: {json.dumps(fused)}")
    return {
        "recipe": "float32 export, onnxruntime.transformers.optimizer (model_type unet, opt_level 0)"
        + (", convert_float_to_float16(keep_io_types=False)" if fp16 else ""),
        "fusedOperators": fused,
        "float16": fp16,
    }


def patch_num_heads_detection() -> None:
    """onnxruntime 1.30's FusionAttentionUnet.get_num_heads calls int() on a shape-[1] array, which NumPy 2.4 and later
    refuse ("only 0-dimensional arrays can be converted to Python scalars"): every attention fusion of a PyTorch 2
    export then stops the optimizer. This is the same detection, reading that one element."""
    import fusion_attention_unet  # noqa: PLC0415 - the name the optimizer imports it by (onnxruntime.transformers is on sys.path)
    import numpy as np  # noqa: PLC0415

    def get_num_heads(self: Any, reshape_q: Any, is_torch2: bool = False) -> int:
        if is_torch2:
            # The shape is Concat(batch, length, num_heads, head_size).
            concat = self.model.get_parent(reshape_q, 1)
            found = concat is not None and concat.op_type == "Concat" and len(concat.input) == 4
            value = self.model.get_constant_value(concat.input[2]) if found else None
            heads = value.reshape(-1)[0] if isinstance(value, np.ndarray) and value.size == 1 else 0
        else:
            value = self.model.get_constant_value(reshape_q.input[1])
            heads = value[2] if isinstance(value, np.ndarray) and list(value.shape) == [4] else 0
        return max(int(heads), 0)

    fusion_attention_unet.FusionAttentionUnet.get_num_heads = get_num_heads


def reuse_components(source: Path, out: Path) -> None:
    """Every component but the UNet from `source`: model folders linked (they are large), the rest copied."""
    for entry in sorted(source.iterdir()):
        if not entry.is_dir() or entry.name == "unet":
            continue
        target = out / entry.name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        if (entry / "model.onnx").is_file():
            target.symlink_to(entry.resolve(), target_is_directory=True)
        else:
            shutil.copytree(entry, target)


def empty_cuda_cache(torch: Any) -> None:
    """Returns the memory of the model just exported (gone with its function's locals) before the next is built."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
