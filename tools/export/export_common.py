"""The export recipe's shared parts: loading a diffusers pipeline folder, the torch modules whose forward takes the
flat ONNX inputs of this project's convention (see /work/shared/conformance/README.md and tools/export/README.md),
the ONNX export itself (TorchScript exporter, external weights past 2 GiB, onnx.checker) and the onnxruntime-vs-torch
verification. The two CLIs (export_ipadapter.py, export_sdxl_controlnet.py) put them together."""
from __future__ import annotations

import contextlib
import inspect
import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import onnx
import onnxruntime as ort
import torch
from diffusers import ControlNetModel, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.models import attention_processor
from diffusers.models.embeddings import ImageProjection
from transformers import CLIPTextModelWithProjection

from cli_support import DEFAULT_ATOL_FP16, DEFAULT_ATOL_FP32

ONNX_RUNTIME_MODEL = ["diffusers", "OnnxRuntimeModel"]
# diffusers' IP-Adapter attention processors (the xFormers one only where diffusers defines it).
IP_ADAPTER_PROCESSORS = tuple(
    getattr(attention_processor, name)
    for name in ("IPAdapterAttnProcessor", "IPAdapterAttnProcessor2_0", "IPAdapterXFormersAttnProcessor")
    if hasattr(attention_processor, name)
)
# protobuf cannot write a message over 2 GiB: a model with more weights keeps them in model.onnx_data beside
# model.onnx (optimum's layout; onnxruntime finds the file by itself). The margin leaves room for the graph.
SINGLE_FILE_WEIGHT_LIMIT = 2**31 - 2**27
# The legacy TorchScript exporter made the conformance fixtures (node names, GroupNorm as InstanceNormalization,
# opset 17); torch >= 2.9 defaults to the dynamo exporter, so ask for this one explicitly.
_TORCHSCRIPT_EXPORTER = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
TEXT_TOKENS = 77
# A timestep between the usual ones, fractional for SD (its ONNX timestep is float: schedulers such as Euler use
# fractional timesteps), an integer for SDXL (int64 by this convention).
EXAMPLE_TIMESTEP = 601
# SDXL's micro-conditioning: original size, crop top-left, target size (pixels).
EXAMPLE_TIME_IDS = (1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0)


class ExportError(Exception):
    """Input the recipe cannot export; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Settings:
    dtype: torch.dtype
    device: torch.device
    opset: int
    atol: float

    @property
    def fp16(self) -> bool:
        return self.dtype == torch.float16

    @classmethod
    def from_args(cls, args: Any) -> Settings:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ExportError("--device cuda, but torch sees no CUDA device; use --device cpu (float32 only)")
        if args.fp16 and device.type != "cuda":
            raise ExportError("--fp16 needs --device cuda (as optimum's exporter: torch's CPU kernels lack float16 for several operators)")
        atol = args.atol if args.atol is not None else (DEFAULT_ATOL_FP16 if args.fp16 else DEFAULT_ATOL_FP32)
        return cls(torch.float16 if args.fp16 else torch.float32, device, args.opset, atol)


@dataclass(frozen=True)
class LatentSizes:
    """Latent (height, width) to trace at, and another to verify at, so that a shape baked into the graph shows."""

    trace: tuple[int, int]
    verify: tuple[int, int]


def latent_sizes(unet: torch.nn.Module) -> LatentSizes:
    # diffusers' UNet passes explicit upsample sizes only when a side is not a multiple of 2**num_upsamplers; the
    # traced graph keeps the branch taken, so both sizes (and every size the ONNX UNet is run at) are multiples.
    factor = 2**unet.num_upsamplers
    sample_size = unet.config.sample_size
    side = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    side = max(factor, min(side, 64) // factor * factor)
    return LatentSizes(trace=(side, side), verify=(2 * factor, 3 * factor))


# ---------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class SourcePipeline:
    folder: Path
    pipe: Any  # StableDiffusionPipeline | StableDiffusionXLPipeline
    sdxl: bool
    model_index: dict[str, Any]


def is_sdxl(model: torch.nn.Module) -> bool:
    """An SDXL UNet or ControlNet: it takes the pooled text embeddings and time ids ("text_time")."""
    return model.config.addition_embed_type == "text_time"


def load_pipeline(folder: str | Path, settings: Settings, variant: str | None = None) -> SourcePipeline:
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ExportError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json). Download the pipeline first, e.g. "
            f"`huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir {folder}`."
        )
    model_index = json.loads(index_path.read_text())
    unet_config_path = folder / "unet" / "config.json"
    if not unet_config_path.is_file():
        raise ExportError(f"{folder} has no unet/config.json: the recipe exports SD 1.x and SDXL pipelines, which have a UNet")
    sdxl = json.loads(unet_config_path.read_text()).get("addition_embed_type") == "text_time"
    if sdxl and (model_index.get("text_encoder") or [None])[0] is None:
        raise ExportError(f"{folder} is an SDXL pipeline without text_encoder (a refiner): not supported, the project's SDXL pipelines use both text encoders")
    common = {"torch_dtype": settings.dtype, "variant": variant}
    print(f"loading {folder} ({'SDXL' if sdxl else 'SD'}, {str(settings.dtype).removeprefix('torch.')}) …")
    if sdxl:
        pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), add_watermarker=False, **common)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False, **common)
    pipe.to(settings.device)
    return SourcePipeline(folder, pipe, sdxl, model_index)


def load_controlnet(reference: str, settings: Settings, variant: str | None = None) -> ControlNetModel:
    class_name = ControlNetModel.load_config(reference).get("_class_name")
    if class_name != "ControlNetModel":
        raise ExportError(f"{reference} is a {class_name}; the recipe exports diffusers' ControlNetModel only")
    controlnet = ControlNetModel.from_pretrained(reference, torch_dtype=settings.dtype, variant=variant)
    return controlnet.to(settings.device).eval()


# ---------------------------------------------------------------------------------------------------------------
# Export modules: each forward takes the ONNX inputs in their order and returns the ONNX outputs in theirs.


class TextEncoderExport(torch.nn.Module):
    """A CLIP text encoder with optimum's outputs: `last_hidden_state`, `pooler_output` (or, with projection as SDXL's
    text_encoder_2, `text_embeds`, `last_hidden_state`), then `hidden_states.0` … `hidden_states.{layers}` (SDXL's
    prompt embeddings are the penultimate ones). `input_ids` are int32, as optimum exports them."""

    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.te = text_encoder
        self.with_projection = isinstance(text_encoder, CLIPTextModelWithProjection)
        first = ["text_embeds", "last_hidden_state"] if self.with_projection else ["last_hidden_state", "pooler_output"]
        self.input_names = ["input_ids"]
        self.output_names = first + [f"hidden_states.{i}" for i in range(text_encoder.config.num_hidden_layers + 1)]

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.te(input_ids=input_ids.to(torch.int64), output_hidden_states=True, return_dict=True)
        first = (out.text_embeds, out.last_hidden_state) if self.with_projection else (out.last_hidden_state, out.pooler_output)
        return (*first, *out.hidden_states)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch"} for name in self.input_names + self.output_names}


class VaeEncoderExport(torch.nn.Module):
    """`sample` [B,3,H,W] in [-1,1] → `latent_parameters`: the latent Gaussian's mean ++ logvar on the channel axis,
    before diffusers clamps logvar and samples, so that the app samples with its own seeded noise."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.v = vae
        self.input_names = ["sample"]
        self.output_names = ["latent_parameters"]

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        # AutoencoderKL._encode without tiling: encoder, then quant_conv when the model has one.
        moments = self.v.encoder(sample)
        return self.v.quant_conv(moments) if self.v.quant_conv is not None else moments

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"sample": {0: "batch", 2: "height", 3: "width"}, "latent_parameters": {0: "batch", 2: "height_latent", 3: "width_latent"}}


class VaeDecoderExport(torch.nn.Module):
    """`latent_sample` (already divided by the scaling factor) → `sample` [B,3,H,W] in about [-1,1]."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.v = vae
        self.input_names = ["latent_sample"]
        self.output_names = ["sample"]

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.v.decode(latent_sample, return_dict=False)[0]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"latent_sample": {0: "batch", 2: "height_latent", 3: "width_latent"}, "sample": {0: "batch", 2: "height", 3: "width"}}


class ImageEncoderExport(torch.nn.Module):
    """CLIP vision with projection: `pixel_values` (the feature extractor's output) → `image_embeds` [B, D]."""

    def __init__(self, image_encoder: torch.nn.Module):
        super().__init__()
        self.e = image_encoder
        self.input_names = ["pixel_values"]
        self.output_names = ["image_embeds"]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.e(pixel_values=pixel_values).image_embeds

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}


class TensorScale:
    """Stands in for the number diffusers' IP-Adapter attention processors hold as their scale. They skip the
    adapter when `scale == 0` and otherwise add `scale * attention(query, image tokens)`; this never equals 0, so
    the traced graph always has the adapter branch, and multiplies by a tensor — the `ip_adapter_scale` input — so
    the scale is an input of the graph instead of a constant. At 0 the branch adds exactly 0: skipping it."""

    def __init__(self, value: torch.Tensor):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __mul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.value * other

    __rmul__ = __mul__


def ip_adapter_processors(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [processor for processor in unet.attn_processors.values() if isinstance(processor, IP_ADAPTER_PROCESSORS)]


@contextlib.contextmanager
def adapter_scale(processors: Sequence[torch.nn.Module], scale: float | TensorScale) -> Iterator[None]:
    """The processors' scale for one call (what `set_ip_adapter_scale(scale)` sets for one adapter), then back."""
    saved = [processor.scale for processor in processors]
    try:
        for processor in processors:
            processor.scale = [scale]
        yield
    finally:
        for processor, scale_list in zip(processors, saved):
            processor.scale = scale_list


class UNetExport(torch.nn.Module):
    """diffusers' UNet2DConditionModel with flat inputs: `sample`, `timestep` (SD: float32 [B]; SDXL: int64 scalar),
    `encoder_hidden_states`, for SDXL `text_embeds` and `time_ids`; with an IP-Adapter loaded (`ip_adapter=True`)
    `image_embeds` [B,1,D] and `ip_adapter_scale` [1]; with ControlNet residuals (`residuals=n`)
    `down_block_additional_residual_0` … `_{n-1}` and `mid_block_additional_residual`. Output: `out_sample`."""

    def __init__(self, unet: torch.nn.Module, *, ip_adapter: bool = False, residuals: int = 0):
        super().__init__()
        self.u = unet
        self.sdxl = is_sdxl(unet)
        self.residuals = residuals
        # A plain list, not registered: the processors are the UNet's own submodules already.
        self.ip_processors = ip_adapter_processors(unet) if ip_adapter else []
        if ip_adapter:
            check_single_proj_adapter(unet, self.ip_processors)
            self.image_embed_dim = unet.encoder_hid_proj.image_projection_layers[0].image_embeds.in_features
        if not isinstance(unet.config.cross_attention_dim, int):
            raise ExportError(f"the UNet's cross_attention_dim is {unet.config.cross_attention_dim}; the recipe handles one width for every block (SD 1.x, SDXL)")
        names = ["sample", "timestep", "encoder_hidden_states"]
        if self.sdxl:
            names += ["text_embeds", "time_ids"]
        if ip_adapter:
            names += ["image_embeds", "ip_adapter_scale"]
        names += self.residual_names
        self.input_names = names
        self.output_names = ["out_sample"]

    @property
    def residual_names(self) -> list[str]:
        if not self.residuals:
            return []
        return [f"down_block_additional_residual_{k}" for k in range(self.residuals)] + ["mid_block_additional_residual"]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.input_names, inputs))
        if not self.ip_processors:
            return self._unet(named)
        with adapter_scale(self.ip_processors, TensorScale(named["ip_adapter_scale"][0])):
            return self._unet(named)

    def diffusers_output(self, named: dict[str, torch.Tensor], scale: float | None = None) -> torch.Tensor:
        """diffusers' own UNet call, the reference: the adapter scale held as a number, as set_ip_adapter_scale does."""
        if not self.ip_processors:
            return self._unet(named)
        with adapter_scale(self.ip_processors, float(scale)):
            return self._unet(named)

    def _unet(self, named: dict[str, torch.Tensor]) -> torch.Tensor:
        added: dict[str, Any] = {}
        if self.sdxl:
            added.update(text_embeds=named["text_embeds"], time_ids=named["time_ids"])
        if self.ip_processors:
            # One adapter: a list of one [B, 1, D] tensor, as diffusers' prepare_ip_adapter_image_embeds makes it.
            added["image_embeds"] = [named["image_embeds"]]
        residuals: dict[str, Any] = {}
        if self.residuals:
            residual_inputs = [named[name] for name in self.residual_names]
            residuals = {"down_block_additional_residuals": tuple(residual_inputs[:-1]), "mid_block_additional_residual": residual_inputs[-1]}
        return self.u(
            named["sample"], named["timestep"], named["encoder_hidden_states"], added_cond_kwargs=added or None, return_dict=False, **residuals
        )[0]

    def example_inputs(
        self, batch: int, latent_size: tuple[int, int], generator: torch.Generator, *, ip_scale: float = 1.0, residuals: Sequence[torch.Tensor] = ()
    ) -> dict[str, torch.Tensor]:
        """Random inputs in ONNX order; the residual inputs only when `residuals` are given (a ControlNet's outputs)."""
        config = self.u.config
        device, dtype = self.u.device, self.u.dtype
        height, width = latent_size
        inputs = {"sample": randn(generator, (batch, config.in_channels, height, width), device, dtype)}
        if self.sdxl:
            inputs["timestep"] = torch.tensor(EXAMPLE_TIMESTEP, dtype=torch.int64, device=device)
        else:
            inputs["timestep"] = torch.full((batch,), EXAMPLE_TIMESTEP + 0.25, dtype=torch.float32, device=device)
        inputs["encoder_hidden_states"] = randn(generator, (batch, TEXT_TOKENS, config.cross_attention_dim), device, dtype)
        if self.sdxl:
            text_embeds_width = config.projection_class_embeddings_input_dim - len(EXAMPLE_TIME_IDS) * config.addition_time_embed_dim
            inputs["text_embeds"] = randn(generator, (batch, text_embeds_width), device, dtype)
            inputs["time_ids"] = torch.tensor([EXAMPLE_TIME_IDS] * batch, dtype=dtype, device=device)
        if self.ip_processors:
            inputs["image_embeds"] = randn(generator, (batch, 1, self.image_embed_dim), device, dtype)
            inputs["ip_adapter_scale"] = torch.tensor([ip_scale], dtype=dtype, device=device)
        if residuals:
            inputs.update(zip(self.residual_names, residuals, strict=True))
        return inputs

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {
            "sample": {0: "batch", 2: "height", 3: "width"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"},
            "out_sample": {0: "batch", 2: "height", 3: "width"},
        }
        if self.sdxl:
            axes.update(text_embeds={0: "batch"}, time_ids={0: "batch"})
        else:
            axes["timestep"] = {0: "batch"}
        if self.ip_processors:
            axes["image_embeds"] = {0: "batch"}
        for k, name in enumerate(self.residual_names):
            axes[name] = {0: "batch", 2: f"h{k}", 3: f"w{k}"}
        return axes


def check_single_proj_adapter(unet: torch.nn.Module, processors: Sequence[torch.nn.Module]) -> None:
    layers = getattr(getattr(unet, "encoder_hid_proj", None), "image_projection_layers", None)
    if not processors or layers is None:
        raise ExportError("the UNet has no IP-Adapter loaded (no IP-Adapter attention processors or image projection)")
    if len(layers) != 1 or any(len(processor.scale) != 1 for processor in processors):
        raise ExportError(f"{len(layers)} IP-Adapters are loaded; the project's convention has one (one image_embeds input)")
    layer = layers[0]
    if type(layer) is not ImageProjection or layer.num_image_text_embeds != 4:
        tokens = f" with {layer.num_image_text_embeds} image tokens" if isinstance(layer, ImageProjection) else ""
        raise ExportError(
            f"the adapter's image projection is {type(layer).__name__}{tokens}; the recipe exports the original IP-Adapter only "
            "(ip-adapter_sd15 / ip-adapter_sdxl / ip-adapter_sdxl_vit-h: 'proj' weights, 4 image tokens), not Plus, Full-face or FaceID"
        )


class ControlNetExport(torch.nn.Module):
    """diffusers' ControlNetModel with flat inputs `sample`, `timestep`, `encoder_hidden_states`, `controlnet_cond`
    [B,3,H,W] in [0,1], `conditioning_scale` (scalar) and for SDXL `text_embeds`, `time_ids`; outputs
    `down_block_res_sample_0` … and `mid_block_res_sample`. Exported without guess mode: its per-residual factors
    (logspace(-1, 0, n+1) × scale) are applied by the app to outputs made with conditioning_scale 1."""

    def __init__(self, controlnet: torch.nn.Module):
        super().__init__()
        self.c = controlnet
        self.sdxl = is_sdxl(controlnet)
        self.input_names = ["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"]
        if self.sdxl:
            self.input_names += ["text_embeds", "time_ids"]
        self.down_count = len(controlnet.controlnet_down_blocks)
        self.output_names = [f"down_block_res_sample_{k}" for k in range(self.down_count)] + ["mid_block_res_sample"]

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, controlnet_cond: torch.Tensor,
        conditioning_scale: torch.Tensor, *text_time: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        added = dict(zip(("text_embeds", "time_ids"), text_time)) if self.sdxl else None
        down, mid = self.c(
            sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=conditioning_scale,
            added_cond_kwargs=added, guess_mode=False, return_dict=False,
        )
        return (*down, mid)

    def example_inputs(self, unet_inputs: dict[str, torch.Tensor], generator: torch.Generator, conditioning_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The UNet's inputs of the same step, plus a control picture and the scale, in ONNX order."""
        sample = unet_inputs["sample"]
        factor = 2 ** (len(self.c.config.conditioning_embedding_out_channels) - 1)
        batch, _, height, width = sample.shape
        cond = torch.rand((batch, self.c.config.conditioning_channels, height * factor, width * factor), generator=generator)
        extra = {
            "controlnet_cond": cond.to(device=sample.device, dtype=sample.dtype),
            "conditioning_scale": torch.tensor(conditioning_scale, dtype=sample.dtype, device=sample.device),
        }
        return {name: unet_inputs[name] if name in unet_inputs else extra[name] for name in self.input_names}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {
            "sample": {0: "batch", 2: "height", 3: "width"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"},
            "controlnet_cond": {0: "batch", 2: "cond_height", 3: "cond_width"},
        }
        if self.sdxl:
            axes.update(text_embeds={0: "batch"}, time_ids={0: "batch"})
        else:
            axes["timestep"] = {0: "batch"}
        for k, name in enumerate(self.output_names):
            axes[name] = {0: "batch", 2: f"h{k}", 3: f"w{k}"}
        return axes


def unet_down_residual_count(unet: torch.nn.Module) -> int:
    """How many down-block residuals the UNet keeps (conv_in's output, each resnet's, each downsampler's)."""
    count = 1
    for block in unet.down_blocks:
        count += len(block.resnets) + (len(block.downsamplers) if block.downsamplers is not None else 0)
    return count


def randn(generator: torch.Generator, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator).to(device=device, dtype=dtype)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def fresh_folder(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def export_onnx(module: torch.nn.Module, inputs: dict[str, torch.Tensor], folder: Path, settings: Settings) -> Path:
    """Traces `module` on `inputs` (in ONNX input order) into folder/model.onnx, checks it with onnx.checker."""
    path = folder / "model.onnx"
    print(f"exporting {folder.name} …", flush=True)
    with tempfile.TemporaryDirectory(prefix="trace-", dir=folder) as scratch:
        traced = Path(scratch) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # diffusers' shape checks become constants in the trace; the sizes the graph is valid for are documented.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            torch.onnx.export(
                module,
                tuple(inputs.values()),
                str(traced),
                input_names=list(inputs),
                output_names=list(module.output_names),
                dynamic_axes=module.dynamic_axes(),
                opset_version=settings.opset,
                do_constant_folding=True,
                **_TORCHSCRIPT_EXPORTER,
            )
        # Past 2 GiB torch writes one file per weight beside the graph: gather them into one file, or none.
        model = onnx.load(str(traced))
    # The exporter silently drops inputs the traced graph does not use (an adapter branch not traced, say).
    dropped = [name for name in inputs if name not in {value.name for value in model.graph.input}]
    if dropped:
        raise ExportError(f"the traced {folder.name} graph does not use its input(s) {', '.join(dropped)}: the export would not follow the convention")
    save_onnx(model, path)
    onnx.checker.check_model(str(path))
    return path


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    data_path = path.with_name(path.name + "_data")
    for stale in (path, data_path):
        stale.unlink(missing_ok=True)
    weight_bytes = sum(tensor.ByteSize() for tensor in model.graph.initializer)
    if weight_bytes < SINGLE_FILE_WEIGHT_LIMIT:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_path.name, size_threshold=1024)


def copy_folder(source: Path, target: Path) -> bool:
    if not source.is_dir():
        return False
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return True


def token_ids(tokenizer: Any, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return ids.to(device=device, dtype=torch.int32)


def export_pipeline_components(source: SourcePipeline, out: Path, settings: Settings, sizes: LatentSizes, verifier: Verifier | None) -> None:
    """The parts every SD pipeline folder has: text encoder(s) and tokenizer(s), the VAE as vae_encoder and
    vae_decoder, the scheduler."""
    pipe = source.pipe
    for encoder_name, tokenizer_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        text_encoder = getattr(pipe, encoder_name, None)
        if text_encoder is None:
            continue
        tokenizer = getattr(pipe, tokenizer_name)
        module = TextEncoderExport(text_encoder).eval()
        folder = fresh_folder(out / encoder_name)
        path = export_onnx(module, {"input_ids": token_ids(tokenizer, ["a photograph of an astronaut riding a horse", ""], settings.device)}, folder, settings)
        text_encoder.config.save_pretrained(str(folder))
        if not copy_folder(source.folder / tokenizer_name, out / tokenizer_name):
            tokenizer.save_pretrained(str(out / tokenizer_name))
        if verifier:
            ids = token_ids(tokenizer, ["a red cube on a wooden table, studio light", "a cat", ""], settings.device)
            verifier.compare_module(encoder_name, module, path, {"input_ids": ids})

    vae = pipe.vae
    # SDXL's VAE overflows in float16; diffusers upcasts it when its config says force_upcast, so it stays float32.
    if source.sdxl and settings.fp16 and vae.config.force_upcast:
        vae.to(dtype=torch.float32)
        print("keeping the SDXL VAE in float32 (force_upcast: it overflows in float16)")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    generator = seeded(0)

    def pictures(batch: int, latent_size: tuple[int, int]) -> torch.Tensor:
        height, width = latent_size
        picture = torch.rand((batch, vae.config.in_channels, height * factor, width * factor), generator=generator) * 2 - 1
        return picture.to(device=vae.device, dtype=vae.dtype)

    def latents(batch: int, latent_size: tuple[int, int]) -> torch.Tensor:
        return randn(generator, (batch, vae.config.latent_channels, *latent_size), vae.device, vae.dtype)

    for name, module, example in (
        ("vae_encoder", VaeEncoderExport(vae).eval(), pictures),
        ("vae_decoder", VaeDecoderExport(vae).eval(), latents),
    ):
        folder = fresh_folder(out / name)
        path = export_onnx(module, {module.input_names[0]: example(2, sizes.trace)}, folder, settings)
        vae.save_config(str(folder))
        if verifier:
            verifier.compare_module(name, module, path, {module.input_names[0]: example(3, sizes.verify)})

    if not copy_folder(source.folder / "scheduler", out / "scheduler"):
        pipe.scheduler.save_config(str(out / "scheduler"))


def export_image_encoder(pipe: Any, out: Path, settings: Settings, verifier: Verifier | None) -> None:
    """image_encoder (CLIP vision with projection) and the feature_extractor diffusers' encode_image runs before it."""
    image_encoder = pipe.image_encoder
    if image_encoder is None or pipe.feature_extractor is None:
        raise ExportError("the pipeline has no image_encoder or feature_extractor after load_ip_adapter; give --image-encoder-folder")
    module = ImageEncoderExport(image_encoder).eval()
    size = image_encoder.config.image_size
    generator = seeded(0)

    def pixels(batch: int) -> torch.Tensor:
        return randn(generator, (batch, image_encoder.config.num_channels, size, size), image_encoder.device, image_encoder.dtype)

    folder = fresh_folder(out / "image_encoder")
    path = export_onnx(module, {"pixel_values": pixels(2)}, folder, settings)
    image_encoder.config.save_pretrained(str(folder))
    pipe.feature_extractor.save_pretrained(str(fresh_folder(out / "feature_extractor")))
    if verifier:
        verifier.compare_module("image_encoder", module, path, {"pixel_values": pixels(3)})


def write_model_index(source: SourcePipeline, out: Path, extra_components: Sequence[str]) -> Path:
    """model_index.json in optimum's layout: each ONNX component an OnnxRuntimeModel; tokenizers and the scheduler
    as the source folder names them. `_class_name` names the family (with `ControlNet` when one is exported)."""
    controlnet = any(name.startswith("controlnet") for name in extra_components)
    family = ("StableDiffusionXL" if source.sdxl else "StableDiffusion") + ("ControlNet" if controlnet else "")
    index: dict[str, Any] = {"_class_name": f"ORT{family}Pipeline", "_diffusers_version": diffusers.__version__}
    defaults = {
        "scheduler": ["diffusers", type(source.pipe.scheduler).__name__],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
    }
    base = ["scheduler", "text_encoder", "tokenizer", "unet", "vae_decoder", "vae_encoder", "text_encoder_2", "tokenizer_2"]
    for name in [*base, *extra_components]:
        if not (out / name).is_dir():
            continue
        if (out / name / "model.onnx").is_file():
            index[name] = ONNX_RUNTIME_MODEL
        else:
            given = source.model_index.get(name)
            index[name] = given if isinstance(given, list) and given[0] is not None else defaults[name]
        if name == "tokenizer_2" and source.sdxl:
            index["force_zeros_for_empty_prompt"] = source.model_index.get("force_zeros_for_empty_prompt", True)
    path = out / "model_index.json"
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


def print_written(out: Path) -> None:
    print(f"wrote {out}:")
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(out)}  {path.stat().st_size / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------------------------
# Verification


class Verifier:
    """Runs exported models with onnxruntime and compares them with torch; collects the failures."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.failures: list[str] = []
        available = ort.get_available_providers()
        # float32 on ONNX Runtime's CPU provider: the reference-like one (no TF32). float16 on CUDA where it has it
        # (its CPU provider lacks float16 kernels for several operators).
        cuda = settings.fp16 and "CUDAExecutionProvider" in available
        self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self._sessions: dict[Path, ort.InferenceSession] = {}
        # torch's float32 reference on CUDA without TF32, which would differ by 1e-3 by itself.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def run(self, path: Path, inputs: dict[str, torch.Tensor], label: str) -> list[np.ndarray] | None:
        feeds = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
        try:
            if path not in self._sessions:
                self._sessions[path] = ort.InferenceSession(str(path), providers=self.providers)
            return self._sessions[path].run(None, feeds)
        except Exception as error:  # noqa: BLE001 - reported, and fatal for float32
            if not self.settings.fp16:
                raise
            print(f"verify {label}: skipped, onnxruntime ({', '.join(self.providers)}) cannot run it: {error}")
            return None

    def compare(self, label: str, expected: Sequence[torch.Tensor], actual: list[np.ndarray] | None) -> float | None:
        if actual is None:
            return None
        worst = 0.0
        for reference, result in zip(expected, actual, strict=True):
            reference = reference.detach().float().cpu().numpy()
            if reference.shape != result.shape:
                return self._fail(label, f"shape {list(result.shape)} where torch gives {list(reference.shape)}")
            difference = np.abs(reference.astype(np.float64) - result.astype(np.float64))
            worst = max(worst, float(difference.max()) if np.isfinite(difference).all() else float("inf"))
        ok = worst <= self.settings.atol
        print(f"verify {label}: max abs diff {worst:.3g} ({'ok' if ok else 'FAILED'}, tolerance {self.settings.atol:g})")
        if not ok:
            self.failures.append(label)
        return worst

    def compare_module(self, label: str, module: torch.nn.Module, path: Path, inputs: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            expected = module(*inputs.values())
        self.compare(label, expected if isinstance(expected, tuple) else (expected,), self.run(path, inputs, label))

    def expect_identical(self, label: str, first: list[np.ndarray] | None, second: list[np.ndarray] | None) -> None:
        if first is None or second is None:
            return
        identical = all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
        print(f"verify {label}: {'identical (ok)' if identical else 'they differ (FAILED)'}")
        if not identical:
            self.failures.append(label)

    def _fail(self, label: str, problem: str) -> None:
        print(f"verify {label}: FAILED, {problem}")
        self.failures.append(label)

    def release(self) -> None:
        self._sessions.clear()

    def finish(self) -> int:
        self.release()
        if self.failures:
            print(f"verification FAILED: {'; '.join(self.failures)}")
            return 1
        print("verification passed")
        return 0
