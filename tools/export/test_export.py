#!/usr/bin/env python3
"""End-to-end test of the export recipe on tiny random-weight models shaped like the conformance fixtures (32-wide
UNets, 64×64 pictures). It builds SD and SDXL diffusers folders, IP-Adapter weights (the "proj" kind) with a CLIP
vision encoder, and an SDXL ControlNet; runs both CLIs with --verify; then checks on its own, against diffusers:
- every component's ONNX signature (names, element types, dims) is the conformance fixture's;
- the UNet with the adapter built in matches diffusers at two scales in one session, and at scale 0 matches the UNet
  with no adapter loaded; the image encoder and feature extractor, text encoders, VAE and ControlNet match diffusers
  (ControlNet guess mode = outputs at conditioning_scale 1 times diffusers' logspace factors);
- model_index.json;
- @diff/core loads each folder and generates 2 steps from it (check_folder.mjs; needs node and a built core).
The CLIs' argument handling is checked first, without the ML stack. Where torch, diffusers, transformers, onnx or
onnxruntime are not importable it prints "skipped: <what is missing>" and exits 0.

  python3 tools/export/test_export.py [--keep] [--conformance DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cli_support import missing_modules

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOKENIZER_DIR = REPO / "packages" / "model-tiny" / "model" / "tokenizer"
CORE_DIST = REPO / "packages" / "core" / "dist" / "index.js"
TOLERANCE = 1e-4
IMAGE_EMBED_DIM = 16

MISSING = missing_modules()
if not MISSING:
    import numpy as np
    import onnxruntime as ort
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from PIL import Image
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

# ---------------------------------------------------------------------------------------------------------------
# The tiny models: the conformance fixtures' configurations.

TINY_UNET = {
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 8,
    "norm_num_groups": 8,
}
SD_UNET = {**TINY_UNET, "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8}
SDXL_UNET = {
    **TINY_UNET,
    "layers_per_block": 2,
    "cross_attention_dim": 64,
    "attention_head_dim": (2, 4),
    "transformer_layers_per_block": (1, 2),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,
}
TINY_VAE = {
    "block_out_channels": (8, 8, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "layers_per_block": 1,
    "sample_size": 64,
}
TEXT_ENCODER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 3, "num_attention_heads": 4, "max_position_embeddings": 77}
IMAGE_ENCODER = {
    "hidden_size": 32,
    "image_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "patch_size": 8,
    "projection_dim": IMAGE_EMBED_DIM,
    "hidden_act": "quick_gelu",
}
SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}

# ---------------------------------------------------------------------------------------------------------------
# Expected signatures, as onnxruntime reports them (`name:type[dims]`): the conformance fixtures' own.

HIDDEN = [f"hidden_states.{i}:float32[batch,77,32]" for i in range(4)]
TEXT_ENCODER_SIGNATURE = {
    "inputs": ["input_ids:int32[batch,77]"],
    "outputs": ["last_hidden_state:float32[batch,77,32]", "pooler_output:float32[batch,32]", *HIDDEN],
}
TEXT_ENCODER_2_SIGNATURE = {
    "inputs": ["input_ids:int32[batch,77]"],
    "outputs": ["text_embeds:float32[batch,32]", "last_hidden_state:float32[batch,77,32]", *HIDDEN],
}
VAE_SIGNATURES = {
    "vae_encoder": {"inputs": ["sample:float32[batch,3,height,width]"], "outputs": ["latent_parameters:float32[batch,8,height_latent,width_latent]"]},
    "vae_decoder": {"inputs": ["latent_sample:float32[batch,4,height_latent,width_latent]"], "outputs": ["sample:float32[batch,3,height,width]"]},
}
IMAGE_ENCODER_SIGNATURE = {"inputs": ["pixel_values:float32[batch,3,32,32]"], "outputs": ["image_embeds:float32[batch,16]"]}
OUT_SAMPLE = ["out_sample:float32[batch,4,height,width]"]
SD_UNET_INPUTS = ["sample:float32[batch,4,height,width]", "timestep:float32[batch]", "encoder_hidden_states:float32[batch,sequence,32]"]
SDXL_UNET_INPUTS = [
    "sample:float32[batch,4,height,width]",
    "timestep:int64[]",
    "encoder_hidden_states:float32[batch,sequence,64]",
    "text_embeds:float32[batch,32]",
    "time_ids:float32[batch,6]",
]
IP_INPUTS = ["image_embeds:float32[batch,1,16]", "ip_adapter_scale:float32[1]"]
SDXL_RESIDUAL_CHANNELS = (32, 32, 32, 32, 64, 64, 64)  # down 0–5, then mid
SDXL_CONTROLNET_SIGNATURE = {
    "inputs": [
        "sample:float32[batch,4,height,width]",
        "timestep:int64[]",
        "encoder_hidden_states:float32[batch,sequence,64]",
        "controlnet_cond:float32[batch,3,cond_height,cond_width]",
        "conditioning_scale:float32[]",
        "text_embeds:float32[batch,32]",
        "time_ids:float32[batch,6]",
    ],
    "outputs": [
        *(f"down_block_res_sample_{k}:float32[batch,{c},h{k},w{k}]" for k, c in enumerate(SDXL_RESIDUAL_CHANNELS[:-1])),
        "mid_block_res_sample:float32[batch,64,h6,w6]",
    ],
}
SDXL_CONTROLNET_UNET_INPUTS = [
    *SDXL_UNET_INPUTS,
    *(f"down_block_additional_residual_{k}:float32[batch,{c},h{k},w{k}]" for k, c in enumerate(SDXL_RESIDUAL_CHANNELS[:-1])),
    "mid_block_additional_residual:float32[batch,64,h6,w6]",
]

# Per exported folder: the fixture it must look like, the model_index class, the @diff/core class, the signatures.
CASES = {
    "sd-ipadapter": {
        "fixture": "tiny-sd-ipadapter",
        "class_name": "ORTStableDiffusionPipeline",
        "pipeline": "StableDiffusionPipeline",
        "components": {
            "text_encoder": TEXT_ENCODER_SIGNATURE,
            **VAE_SIGNATURES,
            "image_encoder": IMAGE_ENCODER_SIGNATURE,
            "unet": {"inputs": SD_UNET_INPUTS + IP_INPUTS, "outputs": OUT_SAMPLE},
        },
    },
    "sdxl-ipadapter": {
        "fixture": "tiny-sdxl-ipadapter",
        "class_name": "ORTStableDiffusionXLPipeline",
        "pipeline": "StableDiffusionXLPipeline",
        "components": {
            "text_encoder": TEXT_ENCODER_SIGNATURE,
            "text_encoder_2": TEXT_ENCODER_2_SIGNATURE,
            **VAE_SIGNATURES,
            "image_encoder": IMAGE_ENCODER_SIGNATURE,
            "unet": {"inputs": SDXL_UNET_INPUTS + IP_INPUTS, "outputs": OUT_SAMPLE},
        },
    },
    "sdxl-controlnet": {
        "fixture": "tiny-sdxl-controlnet",
        "class_name": "ORTStableDiffusionXLControlNetPipeline",
        "pipeline": "StableDiffusionXLControlNetPipeline",
        "components": {
            "text_encoder": TEXT_ENCODER_SIGNATURE,
            "text_encoder_2": TEXT_ENCODER_2_SIGNATURE,
            **VAE_SIGNATURES,
            "controlnet": SDXL_CONTROLNET_SIGNATURE,
            "unet": {"inputs": SDXL_CONTROLNET_UNET_INPUTS, "outputs": OUT_SAMPLE},
        },
    },
}

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(double)": "float64"}


class Checks:
    """Prints each check as it runs and remembers the failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect(self, label: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {label}{f': {detail}' if detail else ''}", flush=True)
        if not ok:
            self.failures.append(label)

    def close(self, label: str, expected, actual, tolerance: float = TOLERANCE) -> None:
        """torch tensors (or arrays) against onnxruntime's arrays: max abs difference within tolerance."""
        worst = 0.0
        for reference, result in zip(expected, actual, strict=True):
            reference = reference.detach().float().numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
            if reference.shape != result.shape:
                self.expect(label, False, f"shape {list(result.shape)}, expected {list(reference.shape)}")
                return
            worst = max(worst, float(np.abs(reference.astype(np.float64) - result.astype(np.float64)).max()))
        self.expect(label, worst <= tolerance, f"max abs diff {worst:.3g} (tolerance {tolerance:g})")


# ---------------------------------------------------------------------------------------------------------------
# The CLIs' argument handling (runs without torch)


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, cwd=REPO)


def check_cli_arguments(checks: Checks) -> None:
    for script, option in (("export_ipadapter.py", "--ip-adapter"), ("export_sdxl_controlnet.py", "--controlnet")):
        result = run_cli(script, "--help")
        checks.expect(f"{script} --help", result.returncode == 0 and option in result.stdout and "--fp16" in result.stdout)
    result = run_cli("export_ipadapter.py", "some-folder", "--output", "out", "--ip-adapter", "x", "--opset", "16")
    checks.expect("--opset 16 is refused", result.returncode == 2 and "17 or higher" in result.stderr, (result.stderr.strip().splitlines() or [""])[-1])
    if MISSING:
        result = run_cli("export_sdxl_controlnet.py", "some-folder", "--output", "out", "--controlnet", "x")
        checks.expect("without the ML stack the CLI names what to install", result.returncode == 2 and "needs" in result.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Building the inputs


def text_encoder(tokenizer, with_projection: bool, seed: int):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        **TEXT_ENCODER,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu" if with_projection else "quick_gelu",
        projection_dim=32,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def build_sd(folder: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**SD_UNET)
    torch.manual_seed(2)
    vae = AutoencoderKL(**TINY_VAE, scaling_factor=0.18215)
    scheduler = PNDMScheduler(**SCHEDULER, skip_prk_steps=True, set_alpha_to_one=False)
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder(tokenizer, False, 3), tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    ).save_pretrained(str(folder))


def build_sdxl(folder: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    torch.manual_seed(11)
    unet = UNet2DConditionModel(**SDXL_UNET)
    torch.manual_seed(12)
    vae = AutoencoderKL(**TINY_VAE, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(**SCHEDULER, timestep_spacing="leading")
    StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder(tokenizer, False, 13), text_encoder_2=text_encoder(tokenizer, True, 14),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False,
    ).save_pretrained(str(folder))


def ip_hidden_size(unet, processor_name: str) -> int:
    """The width diffusers' _convert_ip_adapter_attn_to_diffusers gives a processor's to_k_ip / to_v_ip."""
    channels = list(unet.config.block_out_channels)
    if processor_name.startswith("mid_block"):
        return channels[-1]
    if processor_name.startswith("up_blocks"):
        return channels[::-1][int(processor_name[len("up_blocks.")])]
    return channels[int(processor_name[len("down_blocks.")])]


def build_ip_adapter(folder: Path, subfolder: str, weight_name: str, unet, seed: int) -> None:
    """Weights in the original IP-Adapter layout ({"image_proj": proj/norm, "ip_adapter": "{1,3,5,…}.to_k_ip/to_v_ip"},
    one key pair per cross-attention layer in diffusers' processor order) and a CLIP vision encoder beside them."""
    generator = torch.Generator().manual_seed(seed)

    def weights(*shape: int, scale: float = 0.2):
        return torch.randn(shape, generator=generator) * scale

    width = unet.config.cross_attention_dim
    image_proj = {
        "proj.weight": weights(4 * width, IMAGE_EMBED_DIM),
        "proj.bias": weights(4 * width),
        "norm.weight": 1 + weights(width, scale=0.1),
        "norm.bias": weights(width, scale=0.1),
    }
    cross_attention = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    ip_adapter = {}
    for index, name in enumerate(cross_attention):
        hidden = ip_hidden_size(unet, name)
        ip_adapter[f"{2 * index + 1}.to_k_ip.weight"] = weights(hidden, width)
        ip_adapter[f"{2 * index + 1}.to_v_ip.weight"] = weights(hidden, width)
    (folder / subfolder).mkdir(parents=True)
    torch.save({"image_proj": image_proj, "ip_adapter": ip_adapter}, folder / subfolder / weight_name)
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**IMAGE_ENCODER)).save_pretrained(str(folder / subfolder / "image_encoder"))


def build_controlnet(folder: Path, unet, seed: int) -> None:
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():
        # diffusers zero-initialises these, which would make every residual 0: random, so the residuals carry the picture.
        for module in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out):
            for parameter in module.parameters():
                parameter.normal_(0, 0.2)
    controlnet.save_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------------------------
# Checking the outputs


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def signature(path: Path) -> dict[str, list[str]]:
    def describe(values) -> list[str]:
        return [f"{v.name}:{ORT_TYPES.get(v.type, v.type)}[{','.join('?' if d is None else str(d) for d in v.shape)}]" for v in values]

    model = session(path)
    return {"inputs": describe(model.get_inputs()), "outputs": describe(model.get_outputs())}


def feeds(**tensors) -> dict:
    return {name: tensor.detach().numpy() for name, tensor in tensors.items()}


def check_layout(checks: Checks, case: str, out: Path, conformance: Path | None) -> None:
    spec = CASES[case]
    for component, expected in spec["components"].items():
        actual = signature(out / component / "model.onnx")
        checks.expect(f"{case}: {component} signature", actual == expected, "" if actual == expected else f"{actual} != {expected}")
        fixture = conformance / spec["fixture"] / component / "model.onnx" if conformance else None
        if fixture and fixture.is_file():
            checks.expect(f"{case}: {component} signature = {spec['fixture']}'s", actual == signature(fixture))
    index = json.loads((out / "model_index.json").read_text())
    checks.expect(f"{case}: model_index _class_name", index.get("_class_name") == spec["class_name"], str(index.get("_class_name")))
    listed = {name for name, value in index.items() if isinstance(value, list)}
    folders = {path.name for path in out.iterdir() if path.is_dir()}
    checks.expect(f"{case}: model_index lists every folder", listed == folders, f"listed {sorted(listed)}, folders {sorted(folders)}")
    for component in spec["components"]:
        checks.expect(f"{case}: {component}/config.json", (out / component / "config.json").is_file())
    for folder in ("tokenizer", "scheduler"):
        checks.expect(f"{case}: {folder}/ copied", any((out / folder).iterdir()))


def check_text_and_vae(checks: Checks, case: str, pipe, out: Path) -> None:
    ids = pipe.tokenizer(["a red circle on a blue background", ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        for name in ("text_encoder", "text_encoder_2"):
            encoder = getattr(pipe, name, None)
            if encoder is None:
                continue
            result = encoder(ids, output_hidden_states=True)
            first = (result.text_embeds, result.last_hidden_state) if name == "text_encoder_2" else (result.last_hidden_state, result.pooler_output)
            checks.close(f"{case}: {name} vs transformers", [*first, *result.hidden_states], session(out / name / "model.onnx").run(None, {"input_ids": ids.numpy().astype(np.int32)}))
        generator = torch.Generator().manual_seed(21)
        pictures = torch.rand((2, 3, 64, 48), generator=generator) * 2 - 1
        parameters = pipe.vae.encode(pictures).latent_dist.parameters
        checks.close(f"{case}: vae_encoder vs diffusers' latent_dist parameters", [parameters], session(out / "vae_encoder" / "model.onnx").run(None, feeds(sample=pictures)))
        latents = torch.randn((2, 4, 8, 6), generator=generator)
        decoded = pipe.vae.decode(latents).sample
        checks.close(f"{case}: vae_decoder vs diffusers", [decoded], session(out / "vae_decoder" / "model.onnx").run(None, feeds(latent_sample=latents)))


def unet_conditioning(pipe, sdxl: bool, batch: int, generator) -> tuple[dict, dict]:
    """Random UNet inputs at latent 4×6 (not the traced 8×8): the ONNX feeds and diffusers' keyword arguments."""
    width = pipe.unet.config.cross_attention_dim
    sample = torch.randn((batch, 4, 4, 6), generator=generator)
    hidden = torch.randn((batch, 77, width), generator=generator)
    timestep = torch.tensor(321, dtype=torch.int64) if sdxl else torch.full((batch,), 321.5)
    onnx_feeds = feeds(sample=sample, timestep=timestep, encoder_hidden_states=hidden)
    added = {}
    if sdxl:
        added = {"text_embeds": torch.randn((batch, 32), generator=generator), "time_ids": torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 48.0]] * batch)}
        onnx_feeds.update(feeds(**added))
    return onnx_feeds, {"sample": sample, "timestep": timestep, "encoder_hidden_states": hidden, "added_cond_kwargs": added}


def check_ip_adapter_case(checks: Checks, case: str, pipe, sdxl: bool, ip_dir: Path, subfolder: str, weight_name: str, out: Path) -> None:
    plain_unet = copy.deepcopy(pipe.unet)
    pipe.load_ip_adapter(str(ip_dir), subfolder=subfolder, weight_name=weight_name)
    check_text_and_vae(checks, case, pipe, out)
    generator = torch.Generator().manual_seed(31)
    onnx_feeds, kwargs = unet_conditioning(pipe, sdxl, 2, generator)
    image_embeds = torch.randn((2, 1, IMAGE_EMBED_DIM), generator=generator)
    unet = session(out / "unet" / "model.onnx")
    results = {}
    with torch.no_grad():
        for scale in (0.8, 0.3, 0.0):  # one session, the scale changing from call to call as it may from step to step
            results[scale] = unet.run(None, {**onnx_feeds, "image_embeds": image_embeds.numpy(), "ip_adapter_scale": np.array([scale], np.float32)})
            if scale:
                pipe.set_ip_adapter_scale(scale)
                expected = pipe.unet(**{**kwargs, "added_cond_kwargs": {**kwargs["added_cond_kwargs"], "image_embeds": [image_embeds]}}).sample
                checks.close(f"{case}: unet vs diffusers at ip_adapter_scale {scale}", [expected], results[scale])
        without_adapter = plain_unet(**{**kwargs, "added_cond_kwargs": kwargs["added_cond_kwargs"] or None}).sample
        checks.close(f"{case}: unet at ip_adapter_scale 0 vs the UNet with no adapter loaded", [without_adapter], results[0.0])
        effect = float(np.abs(results[0.8][0] - results[0.0][0]).max())
        checks.expect(f"{case}: the adapter changes the output", effect > 1e-3, f"max |scale 0.8 − scale 0| = {effect:.3g}")

        pixels = torch.randn((2, 3, 32, 32), generator=generator)
        checks.close(f"{case}: image_encoder vs transformers", [pipe.image_encoder(pixels).image_embeds], session(out / "image_encoder" / "model.onnx").run(None, feeds(pixel_values=pixels)))
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    exported = CLIPImageProcessor.from_pretrained(str(out / "feature_extractor"))(picture, return_tensors="pt").pixel_values
    reference = pipe.feature_extractor(picture, return_tensors="pt").pixel_values
    checks.close(f"{case}: feature_extractor = the pipeline's", [reference], [exported.numpy()], tolerance=0.0)


def check_controlnet_case(checks: Checks, pipe, controlnet, out: Path) -> None:
    case = "sdxl-controlnet"
    check_text_and_vae(checks, case, pipe, out)
    generator = torch.Generator().manual_seed(41)
    onnx_feeds, kwargs = unet_conditioning(pipe, True, 2, generator)
    picture = torch.rand((2, 3, 32, 48), generator=generator)
    control = session(out / "controlnet" / "model.onnx")
    names = [value.name for value in control.get_outputs()]
    controlnet_args = (kwargs["sample"], kwargs["timestep"], kwargs["encoder_hidden_states"], picture)

    def exported(scale: float):
        return control.run(None, {**onnx_feeds, "controlnet_cond": picture.numpy(), "conditioning_scale": np.array(scale, np.float32)})

    with torch.no_grad():
        down, mid = controlnet(*controlnet_args, conditioning_scale=0.7, added_cond_kwargs=kwargs["added_cond_kwargs"], return_dict=False)
        checks.close(f"{case}: controlnet vs diffusers at conditioning_scale 0.7", [*down, mid], exported(0.7))
        guess_down, guess_mid = controlnet(*controlnet_args, conditioning_scale=0.7, added_cond_kwargs=kwargs["added_cond_kwargs"], guess_mode=True, return_dict=False)
        factors = torch.logspace(-1, 0, len(names)).numpy() * 0.7
        scaled = [output * factor for output, factor in zip(exported(1.0), factors, strict=True)]
        checks.close(f"{case}: guess mode = outputs at scale 1 × logspace(-1, 0, {len(names)}) × 0.7", [*guess_down, guess_mid], scaled)
        expected = pipe.unet(**kwargs, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        residual_feeds = {f"down_block_additional_residual_{k}": value.numpy() for k, value in enumerate(down)}
        result = session(out / "unet" / "model.onnx").run(None, {**onnx_feeds, **residual_feeds, "mid_block_additional_residual": mid.numpy()})
        checks.close(f"{case}: unet with residuals vs diffusers", [expected], result)


def check_in_project(checks: Checks, case: str, out: Path) -> None:
    """@diff/core loads the folder with its pipeline class, reads the same signatures and generates from it."""
    node = shutil.which("node")
    if node is None or not CORE_DIST.is_file():
        print(f"note {case}: node check skipped: {'node is not on PATH' if node is None else f'{CORE_DIST} is missing (build @diff/core)'}")
        return
    result = subprocess.run([node, str(HERE / "check_folder.mjs"), str(out), "--generate"], capture_output=True, text=True, cwd=REPO)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        checks.expect(f"{case}: check_folder.mjs report", False, (result.stdout + result.stderr)[-2000:])
        return
    if "error" in report:
        checks.expect(f"{case}: @diff/core loads the folder", False, report["error"][-2000:])
        return
    spec = CASES[case]
    checks.expect(f"{case}: @diff/core loads it with {spec['pipeline']}", report["pipeline"] == spec["pipeline"], str(report["pipeline"]))
    for component, expected in spec["components"].items():
        checks.expect(f"{case}: @diff/core reads the {component} signature", report["components"].get(component) == expected)
    if report.get("generateError"):
        checks.expect(f"{case}: @diff/core generates from it", False, report["generateError"][-2000:])
    elif report.get("generated"):
        generated = report["generated"]
        checks.expect(f"{case}: @diff/core generates from it", (generated["width"], generated["height"], generated["channels"]) == (64, 64, 3), json.dumps(generated))
    else:
        print(f"note {case}: no generation: {report.get('pipelineNote')}")


# ---------------------------------------------------------------------------------------------------------------


def export(checks: Checks, label: str, script: str, *args: str) -> bool:
    print(f"---- {label}: {script} {' '.join(args)}", flush=True)
    result = run_cli(script, *args, "--verify")
    print(result.stdout[-6000:], end="")
    ok = result.returncode == 0 and "verification passed" in result.stdout
    checks.expect(f"{label}: {script} --verify", ok, "" if ok else result.stderr[-4000:])
    return ok


def run(work: Path, conformance: Path | None, checks: Checks) -> None:
    sd, sdxl, ip_sd, ip_sdxl, controlnet_dir, out = (work / name for name in ("sd", "sdxl", "ip-sd", "ip-sdxl", "controlnet-sdxl", "out"))
    build_sd(sd)
    build_sdxl(sdxl)

    def sd_pipe():
        return StableDiffusionPipeline.from_pretrained(str(sd), safety_checker=None, requires_safety_checker=False)

    def sdxl_pipe():
        return StableDiffusionXLPipeline.from_pretrained(str(sdxl), add_watermarker=False)

    build_ip_adapter(ip_sd, "models", "ip-adapter_sd15.bin", sd_pipe().unet, 51)
    build_ip_adapter(ip_sdxl, "sdxl_models", "ip-adapter_sdxl.bin", sdxl_pipe().unet, 52)
    build_controlnet(controlnet_dir, sdxl_pipe().unet, 53)

    if export(checks, "sd-ipadapter", "export_ipadapter.py", str(sd), "--ip-adapter", str(ip_sd), "--subfolder", "models",
              "--weight-name", "ip-adapter_sd15.bin", "--output", str(out / "sd-ipadapter")):
        check_layout(checks, "sd-ipadapter", out / "sd-ipadapter", conformance)
        check_ip_adapter_case(checks, "sd-ipadapter", sd_pipe(), False, ip_sd, "models", "ip-adapter_sd15.bin", out / "sd-ipadapter")
        check_in_project(checks, "sd-ipadapter", out / "sd-ipadapter")
    if export(checks, "sdxl-ipadapter", "export_ipadapter.py", str(sdxl), "--ip-adapter", str(ip_sdxl), "--subfolder", "sdxl_models",
              "--weight-name", "ip-adapter_sdxl.bin", "--output", str(out / "sdxl-ipadapter")):
        check_layout(checks, "sdxl-ipadapter", out / "sdxl-ipadapter", conformance)
        check_ip_adapter_case(checks, "sdxl-ipadapter", sdxl_pipe(), True, ip_sdxl, "sdxl_models", "ip-adapter_sdxl.bin", out / "sdxl-ipadapter")
        check_in_project(checks, "sdxl-ipadapter", out / "sdxl-ipadapter")
    if export(checks, "sdxl-controlnet", "export_sdxl_controlnet.py", str(sdxl), "--controlnet", str(controlnet_dir), "--output", str(out / "sdxl-controlnet")):
        check_layout(checks, "sdxl-controlnet", out / "sdxl-controlnet", conformance)
        check_controlnet_case(checks, sdxl_pipe(), ControlNetModel.from_pretrained(str(controlnet_dir)).eval(), out / "sdxl-controlnet")
        check_in_project(checks, "sdxl-controlnet", out / "sdxl-controlnet")


def default_conformance() -> Path | None:
    return next((path for path in (REPO / "shared" / "conformance", REPO.parent / "shared" / "conformance") if path.is_dir()), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    parser.add_argument("--conformance", type=Path, default=default_conformance(), help="the conformance folder to compare signatures with (default: shared/conformance beside or in the repository)")
    args = parser.parse_args(argv)
    checks = Checks()
    check_cli_arguments(checks)
    if MISSING:
        if checks.failures:
            print(f"FAILED: {'; '.join(checks.failures)}")
            return 1
        print(f"skipped: {', '.join(MISSING)} not importable by {sys.executable} (see tools/export/README.md)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="diff-export-test-"))
    try:
        run(work, args.conformance, checks)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if checks.failures:
        print(f"FAILED ({len(checks.failures)}): {'; '.join(checks.failures)}")
        return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
