import { RefsError, type ImageEncoderRef, type RandnRef, type Refs, type RunRef, type SchedulerRef, type TokenizerRefs } from './refs.js';
import { buildReport, uniqueIds, type CaseResult, type Report, type SectionName } from './report.js';
import { checkImageEncoderSection } from './sections/image-encoder.js';
import { checkPipelineSection, type PipelineSectionName } from './sections/pipelines.js';
import { checkRandnSection } from './sections/randn.js';
import { checkSchedulersSection } from './sections/schedulers.js';
import { checkTokenizerSection } from './sections/tokenizer.js';

const PIPELINE_SECTIONS: readonly PipelineSectionName[] = [
  'sd_runs', 'sdxl_runs', 'inpaint_runs', 'controlnet_runs', 'sdxl_inpaint_runs', 'sdxl_controlnet_runs', 'ipadapter_runs', 'sdxl_ipadapter_runs',
];

export interface RunOptions {
  /** The folder holding tiny-sd/, tiny-sdxl/, … */
  modelsDir: string;
  /** Only these sections; all when empty or absent. */
  sections?: readonly SectionName[];
}

/** A section the refs file lacks has no cases; one of the wrong kind means the file is not a refs file. */
function listOf<T>(refs: Refs, section: Exclude<SectionName, 'tokenizer'>): T[] {
  const entries: unknown = refs[section];
  if (entries === undefined) return [];
  if (!Array.isArray(entries)) throw new RefsError(`"${section}" must be an array of cases`);
  return entries as T[];
}

function tokenizerRefsOf(refs: Refs): TokenizerRefs | undefined {
  const tokenizer: unknown = refs.tokenizer;
  if (tokenizer === undefined) return undefined;
  if (typeof tokenizer !== 'object' || tokenizer === null || !Array.isArray((tokenizer as TokenizerRefs).cases)) {
    throw new RefsError('"tokenizer" must be an object with a "cases" array');
  }
  return tokenizer as TokenizerRefs;
}

export async function runConformance(refs: Refs, options: RunOptions): Promise<Report> {
  // Every section is validated before any runs, so a malformed file fails at once rather than after minutes of work.
  const randnRefs = listOf<RandnRef>(refs, 'randn');
  const tokenizerRefs = tokenizerRefsOf(refs);
  const schedulerRefs = listOf<SchedulerRef>(refs, 'schedulers');
  const imageEncoderRefs = listOf<ImageEncoderRef>(refs, 'image_encoder');
  const runRefs = PIPELINE_SECTIONS.map((section) => [section, listOf<RunRef>(refs, section)] as const);

  const wanted = (section: SectionName) => !options.sections?.length || options.sections.includes(section);
  const cases: CaseResult[] = [];
  if (wanted('randn')) cases.push(...(await checkRandnSection(randnRefs)));
  if (wanted('tokenizer') && tokenizerRefs) cases.push(...(await checkTokenizerSection(tokenizerRefs, options.modelsDir)));
  if (wanted('schedulers')) cases.push(...(await checkSchedulersSection(schedulerRefs)));
  if (wanted('image_encoder')) cases.push(...(await checkImageEncoderSection(imageEncoderRefs, options.modelsDir)));
  for (const [section, entries] of runRefs) {
    if (wanted(section)) cases.push(...(await checkPipelineSection(section, entries, options.modelsDir)));
  }
  return buildReport(uniqueIds(cases));
}
