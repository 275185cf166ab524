/**
 * Progress of one generation: a callback plugin times the steps (and sees the phases around them: before the first
 * step the pipeline encodes, after the last one it decodes), and a view shows it — a redrawn bar on a terminal,
 * plain lines elsewhere, nothing with --quiet.
 */
import type { CallbackPipeline, CallbackPlugin } from '@diff/core';

export type Phase = 'load' | 'encode' | 'denoise' | 'decode' | 'save';

/** Where progress goes. `redraw` (a terminal) replaces the current line; without it each update is a line. */
export interface ProgressView {
  line(text: string): void;
  redraw?(text: string): void;
  columns?(): number | undefined;
}

/** Milliseconds spent in each phase. */
export type PhaseTimings = Readonly<Record<`${Phase}Ms`, number>>;

const BAR_WIDTH = 24;
/** Plain lines come at most this often (the first and last step always), so a log stays readable at 300 it/s. */
const LINE_INTERVAL_MS = 1000;
/** A terminal bar is redrawn at most this often. */
const REDRAW_INTERVAL_MS = 80;

export class Progress {
  private phase?: Phase;
  private phaseStart = 0;
  private readonly spent: Record<Phase, number> = { load: 0, encode: 0, denoise: 0, decode: 0, save: 0 };
  private firstStepAt?: number;
  private lastShown = -Infinity;
  private barShown = false;
  /** Steps finished and the schedule's length, once the loop runs. */
  completedSteps = 0;
  numTimesteps?: number;
  /** The guidance scale the generation started with (the pipeline's default when none was given). */
  startGuidanceScale?: number;

  constructor(
    private readonly view: ProgressView | undefined,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The plugin that reports the steps; it reads no tensors and runs after the other callbacks of a step. */
  readonly callback: CallbackPlugin<never> = Object.freeze({
    specificationVersion: 'v1' as const,
    name: 'diff-sd progress',
    tensorInputs: [],
    enforce: 'post' as const,
    onStepBegin: (pipeline: CallbackPipeline) => {
      if (pipeline.interrupt) return this.enter('decode');
      if (this.firstStepAt !== undefined) return;
      this.firstStepAt = this.now();
      this.numTimesteps = pipeline.numTimesteps;
      this.startGuidanceScale = pipeline.guidanceScale;
      this.enter('denoise');
    },
    onStepEnd: (pipeline: CallbackPipeline, stepIndex: number) => {
      this.completedSteps = stepIndex + 1;
      const last = stepIndex === pipeline.numTimesteps - 1 || pipeline.interrupt;
      this.showStep(last);
      if (last) this.enter('decode');
    },
  });

  /** Starts a phase (ending the current one). */
  enter(phase: Phase): void {
    if (phase === this.phase) return;
    // On a terminal the finished bar stays; the phases after it are redrawn on the next line.
    if (this.phase === 'denoise' && this.barShown) this.view?.line('');
    this.barShown = false;
    this.stopClock();
    this.phase = phase;
    this.phaseStart = this.now();
    if (phase !== 'denoise' && this.view) this.show(phase, true);
  }

  /** Ends the current phase; the timings are final. */
  finish(): void {
    this.stopClock();
    this.phase = undefined;
    if (this.barShown) this.view?.redraw?.('');
    this.barShown = false;
  }

  /** A message between progress updates (a notice, the interrupt), without tearing the bar. */
  note(message: string): void {
    if (!this.view) return;
    if (this.barShown) this.view.redraw?.('');
    this.view.line(message);
    this.barShown = false;
  }

  get timings(): PhaseTimings {
    const running = this.phase ? this.now() - this.phaseStart : 0;
    const spent = (phase: Phase) => Math.round(this.spent[phase] + (phase === this.phase ? running : 0));
    return { loadMs: spent('load'), encodeMs: spent('encode'), denoiseMs: spent('denoise'), decodeMs: spent('decode'), saveMs: spent('save') };
  }

  /** Denoising steps per second so far. */
  get stepsPerSecond(): number | undefined {
    if (this.firstStepAt === undefined || this.completedSteps === 0) return undefined;
    const denoiseMs = this.spent.denoise + (this.phase === 'denoise' ? this.now() - this.phaseStart : 0);
    return denoiseMs > 0 ? (this.completedSteps * 1000) / denoiseMs : undefined;
  }

  private stopClock(): void {
    if (this.phase) this.spent[this.phase] += this.now() - this.phaseStart;
  }

  private showStep(last: boolean): void {
    if (!this.view) return;
    const interval = this.view.redraw ? REDRAW_INTERVAL_MS : LINE_INTERVAL_MS;
    const now = this.now();
    if (!last && this.completedSteps !== 1 && now - this.lastShown < interval) return;
    this.lastShown = now;
    this.show(this.stepText(), false);
  }

  private stepText(): string {
    const total = this.numTimesteps ?? this.completedSteps;
    const rate = this.stepsPerSecond;
    const remaining = rate ? (total - this.completedSteps) / rate : undefined;
    const speed = rate === undefined ? '' : `${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} it/s`;
    const eta = remaining === undefined || this.completedSteps >= total ? '' : `ETA ${formatSeconds(remaining)}`;
    const counts = `${this.completedSteps}/${total}`;
    if (!this.view?.redraw) return `denoise ${counts}${speed ? ` (${[speed, eta].filter(Boolean).join(', ')})` : ''}`;
    const columns = this.view.columns?.() || 80; // 0 or undefined: a terminal that does not tell
    const width = Math.max(0, Math.min(BAR_WIDTH, columns - 40));
    const filled = total > 0 ? Math.round((this.completedSteps / total) * width) : 0;
    const bar = width > 0 ? ` ▕${'█'.repeat(filled)}${' '.repeat(width - filled)}▏` : '';
    return [`denoise${bar} ${counts}`, speed, eta].filter(Boolean).join('  ');
  }

  /** A phase name or a step line: redrawn in place on a terminal, a line elsewhere. */
  private show(text: string, isPhase: boolean): void {
    const view = this.view as ProgressView;
    if (!view.redraw) return view.line(text);
    view.redraw(isPhase ? `${text}…` : text);
    this.barShown = true;
  }
}

function formatSeconds(seconds: number): string {
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const whole = Math.ceil(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, '0')}`;
}
