// Checks the exported ONNX model with onnxruntime-node:
//  1. parity with the PyTorch networks (reference tensors written by `eval.py --dump-ref`),
//     at batch sizes 1 and 3 (the graphs were traced at batch 2: the batch axis must be dynamic);
//  2. the 48-case colour check of eval_cases.json (DDIM 20 steps, "leading" spacing, CFG batched
//     as [uncond; cond]) at guidance 7.5 and 1.
//
//   node tools/tiny-model/eval.mjs [--model packages/model-tiny/model] [--ref /tmp/tiny-model-work/ref.json]
//
// Without --ref the initial noise comes from a seeded mulberry32 + Box-Muller generator instead of
// torch's, so the figures differ a little from eval.py's.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const opt = (name, def) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : def);
const modelDir = path.resolve(opt('--model', path.join(here, '../../packages/model-tiny/model')));
const refPath = opt('--ref', '/tmp/tiny-model-work/ref.json');
const doc = JSON.parse(readFileSync(path.join(here, 'eval_cases.json'), 'utf8'));
const vaeCfg = JSON.parse(readFileSync(path.join(modelDir, 'vae_decoder/config.json'), 'utf8'));
const schedCfg = JSON.parse(readFileSync(path.join(modelDir, 'scheduler/scheduler_config.json'), 'utf8'));
const ctxDim = JSON.parse(readFileSync(path.join(modelDir, 'unet/config.json'), 'utf8')).cross_attention_dim;

const load = (name) => ort.InferenceSession.create(path.join(modelDir, name, 'model.onnx'));
const [te, unet, dec, enc] = await Promise.all(['text_encoder', 'unet', 'vae_decoder', 'vae_encoder'].map(load));
const f32 = (data, dims) => new ort.Tensor('float32', Float32Array.from(data), dims);
const pad77 = (ids) => [...ids, ...Array(77 - ids.length).fill(ids[ids.length - 1])];

async function encodeText(idLists) {
  const flat = Int32Array.from(idLists.flatMap(pad77));
  const out = await te.run({ input_ids: new ort.Tensor('int32', flat, [idLists.length, 77]) });
  return out.last_hidden_state.data;
}

// ---------------------------------------------------------------- 1. parity
let ref = null;
if (existsSync(refPath)) {
  ref = JSON.parse(readFileSync(refPath, 'utf8'));
  const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
  const checks = [];
  for (const n of [1, 3]) {
    const per = (arr) => arr.length / 3;
    const take = (arr) => arr.slice(0, per(arr) * n);
    const r = ref;
    const teOut = await encodeText(r.ids.slice(0, n));
    checks.push([`text_encoder B=${n}`, maxDiff(teOut, take(r.te_out))]);
    const u = await unet.run({
      sample: f32(take(r.unet_sample), [n, 4, 8, 8]),
      timestep: f32(r.unet_t.slice(0, n), [n]),
      encoder_hidden_states: f32(take(r.te_out), [n, 77, ctxDim]),
    });
    checks.push([`unet B=${n}`, maxDiff(u.out_sample.data, take(r.unet_out))]);
    const d = await dec.run({ latent_sample: f32(take(r.dec_in), [n, 4, 8, 8]) });
    checks.push([`vae_decoder B=${n}`, maxDiff(d.sample.data, take(r.dec_out))]);
    const e = await enc.run({ sample: f32(take(r.enc_in), [n, 3, 64, 64]) });
    checks.push([`vae_encoder B=${n}`, maxDiff(e.latent_parameters.data, take(r.enc_out))]);
  }
  for (const [name, diff] of checks) console.log(`parity ${name}: max |onnx - torch| = ${diff.toExponential(2)}`);
  if (checks.some(([, diff]) => !(diff < 1e-3))) throw new Error('ONNX output differs from PyTorch');
} else {
  console.log(`(no ${refPath}: parity check skipped)`);
}

// ---------------------------------------------------------------- 2. 48-case colour check
function alphasCumprod() {
  const { num_train_timesteps: n, beta_start: b0, beta_end: b1 } = schedCfg;
  const out = new Float64Array(n);
  let p = 1;
  for (let i = 0; i < n; i++) {
    const s = Math.fround(Math.sqrt(b0) + ((Math.sqrt(b1) - Math.sqrt(b0)) * i) / (n - 1));
    p = Math.fround(p * Math.fround(1 - Math.fround(s * s)));
    out[i] = p;
  }
  return out;
}

function gaussian(seed, count) {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < count) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

async function generate(cases, guidance, steps = 20) {
  const n = cases.length;
  const L = 4 * 8 * 8;
  const ac = alphasCumprod();
  const ratio = Math.floor(schedCfg.num_train_timesteps / steps);
  const cond = await encodeText(cases.map((c) => c.input_ids));
  const uncond = await encodeText(cases.map(() => doc.tokenizer_check.empty_prompt));
  const x = new Float32Array(n * L);
  cases.forEach((c, i) => x.set(ref?.init_noise?.[c.seed] ?? gaussian(c.seed, L), i * L));
  const cfg = guidance > 1;
  const ctx = new Float32Array((cfg ? 2 : 1) * cond.length);
  if (cfg) ctx.set(uncond, 0);
  ctx.set(cond, cfg ? cond.length : 0);
  for (let k = steps - 1; k >= 0; k--) {
    const t = k * ratio + schedCfg.steps_offset;
    const b = cfg ? 2 * n : n;
    const sample = new Float32Array(b * L);
    sample.set(x, 0);
    if (cfg) sample.set(x, n * L);
    const out = await unet.run({
      sample: new ort.Tensor('float32', sample, [b, 4, 8, 8]),
      timestep: new ort.Tensor('float32', new Float32Array(b).fill(t), [b]),
      encoder_hidden_states: new ort.Tensor('float32', ctx, [b, 77, ctxDim]),
    });
    const e = out.out_sample.data;
    const aT = ac[t];
    const aPrev = t - ratio >= 0 ? ac[t - ratio] : schedCfg.set_alpha_to_one ? 1 : ac[0];
    for (let i = 0; i < n * L; i++) {
      const eps = cfg ? e[i] + guidance * (e[n * L + i] - e[i]) : e[i];
      const x0 = (x[i] - Math.sqrt(1 - aT) * eps) / Math.sqrt(aT);
      x[i] = Math.sqrt(aPrev) * x0 + Math.sqrt(1 - aPrev) * eps;
    }
  }
  const z = x.map((v) => v / vaeCfg.scaling_factor);
  const img = (await dec.run({ latent_sample: new ort.Tensor('float32', z, [n, 4, 8, 8]) })).sample.data;
  // -> n images, HWC uint8
  const HW = 64 * 64;
  return cases.map((_, i) => {
    const px = new Uint8Array(HW * 3);
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < HW; p++) {
        const v = Math.min(1, Math.max(-1, img[(i * 3 + c) * HW + p]));
        px[p * 3 + c] = Math.round((v / 2 + 0.5) * 255);
      }
    return px;
  });
}

const median = (vals) => {
  const s = Float64Array.from(vals).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const nearest = (rgb) => {
  let best = null;
  let bd = Infinity;
  for (const [name, p] of Object.entries(doc.palette)) {
    const d = (rgb[0] - p[0]) ** 2 + (rgb[1] - p[1]) ** 2 + (rgb[2] - p[2]) ** 2;
    if (d < bd) [best, bd] = [name, d];
  }
  return best;
};
function classify(px) {
  const { border_px: b, far_threshold: far, min_shape_pixels: minPx } = doc.classifier;
  const border = [[], [], []];
  for (let y = 0; y < 64; y++)
    for (let x = 0; x < 64; x++)
      if (y < b || y >= 64 - b || x < b || x >= 64 - b) for (let c = 0; c < 3; c++) border[c].push(px[(y * 64 + x) * 3 + c]);
  const bg = border.map(median);
  const shape = [[], [], []];
  for (let p = 0; p < 64 * 64; p++) {
    const d = Math.hypot(px[p * 3] - bg[0], px[p * 3 + 1] - bg[1], px[p * 3 + 2] - bg[2]);
    if (d > far) for (let c = 0; c < 3; c++) shape[c].push(px[p * 3 + c]);
  }
  return { shape: shape[0].length < minPx ? null : nearest(shape.map(median)), background: nearest(bg) };
}

for (const gs of [doc.image.guidance_scale, doc.image.compare_guidance_scale]) {
  const t0 = Date.now();
  const imgs = await generate(doc.cases, gs, doc.image.num_inference_steps);
  let ok = 0;
  const misses = [];
  doc.cases.forEach((c, i) => {
    const r = classify(imgs[i]);
    if (r.shape === c.shape_color && r.background === c.background_color) ok++;
    else misses.push(`   miss: "${c.prompt}" seed ${c.seed} -> shape ${r.shape}, background ${r.background}`);
  });
  const pct = ((100 * ok) / doc.cases.length).toFixed(1);
  console.log(`onnx guidance ${gs}: ${pct}% (${ok}/${doc.cases.length}) colour matches [${Date.now() - t0} ms]`);
  if (argv.includes('--verbose')) misses.forEach((m) => console.log(m));
}
