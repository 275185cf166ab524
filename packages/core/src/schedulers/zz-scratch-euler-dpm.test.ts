import { Generator, randn } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import { DPMSolverMultistepScheduler } from './dpm-solver-multistep.js';
test('convergence', () => {
  const x0 = randn([1, 4, 8, 8], { generator: new Generator().manualSeed(1), dtype: 'float32' }) as Tensor<'float32'>;
  const solve = (order: number, n: number, extra: Record<string, unknown> = {}) => {
    const s = new DPMSolverMultistepScheduler({ betaStart: 0.00085, betaEnd: 0.012, betaSchedule: 'scaled_linear', solverOrder: order, finalSigmasType: 'sigma_min', lowerOrderFinal: false, ...extra });
    s.setTimesteps(n);
    let x = x0;
    for (const t of s.timesteps) {
      const sig = s.sigmas[s.stepIndex ?? 0];
      const eps = new Tensor(x.data.map((v) => Math.tanh(0.5 * v / Math.sqrt(sig*sig+1)) + 0.1 * Math.sin(t / 200)), x.shape);
      x = s.step(eps, t, x).prevSample;
    }
    return x.data;
  };
  const ref = solve(3, 999);
  const err = (a: Float32Array) => Math.max(...Array.from(a, (v, i) => Math.abs(v - ref[i])));
  for (const order of [1, 2, 3]) console.log(order, [16, 32, 64, 128].map((n) => err(solve(order, n)).toExponential(2)).join(' '));
  console.log('heun', [16, 32, 64, 128].map((n) => err(solve(2, n, {solverType: 'heun'})).toExponential(2)).join(' '));
});
