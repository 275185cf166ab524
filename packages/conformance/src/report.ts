import { DiffError } from '@diff/core';

export const SECTION_NAMES = [
  'randn',
  'tokenizer',
  'schedulers',
  'sd_runs',
  'sdxl_runs',
  'inpaint_runs',
  'controlnet_runs',
  'sdxl_inpaint_runs',
  'sdxl_controlnet_runs',
  'image_encoder',
  'ipadapter_runs',
  'sdxl_ipadapter_runs',
] as const;

export type SectionName = (typeof SECTION_NAMES)[number];

export function isSectionName(name: string): name is SectionName {
  return (SECTION_NAMES as readonly string[]).includes(name);
}

export interface CaseResult {
  section: SectionName;
  id: string;
  /** `null`: the project cannot run this case yet (unsupported) — never counted as passed. */
  ok: boolean | null;
  /** `null` where no number was compared (unsupported, crashed, token ids). */
  maxAbsDiff: number | null;
  detail: string;
}

/** What checking one case found: a CaseResult without its section and id. */
export type CaseOutcome = Omit<CaseResult, 'section' | 'id'>;

export interface SectionSummary {
  passed: number;
  failed: number;
  unsupported: number;
}

export interface Report {
  sections: Record<SectionName, SectionSummary>;
  cases: CaseResult[];
}

export function buildReport(cases: readonly CaseResult[]): Report {
  const sections = Object.fromEntries(
    SECTION_NAMES.map((name) => [name, { passed: 0, failed: 0, unsupported: 0 }]),
  ) as Record<SectionName, SectionSummary>;
  for (const result of cases) {
    const summary = sections[result.section];
    if (result.ok === null) summary.unsupported++;
    else if (result.ok) summary.passed++;
    else summary.failed++;
  }
  return { sections, cases: [...cases] };
}

/** Whether a case failed; with `strict` (CI), an unsupported case counts as failed: nothing may silently not run. */
export function hasFailures(report: Report, strict = false): boolean {
  return report.cases.some((result) => result.ok === false || (strict && result.ok === null));
}

/** A refs file may repeat a case (same scheduler and step count, other config): number repeats so ids stay unique. */
export function uniqueIds(cases: readonly CaseResult[]): CaseResult[] {
  const seen = new Map<string, number>();
  return cases.map((result) => {
    const key = `${result.section}\u0000${result.id}`;
    const count = (seen.get(key) ?? 0) + 1;
    seen.set(key, count);
    return count === 1 ? result : { ...result, id: `${result.id} (${count})` };
  });
}

/**
 * Runs one case, turning what it throws into a result: the library's UnsupportedError means "cannot run yet",
 * anything else is a failure of the case.
 */
export async function settleCase(
  section: SectionName,
  id: string,
  check: () => Promise<CaseOutcome> | CaseOutcome,
): Promise<CaseResult> {
  try {
    return { section, id, ...(await check()) };
  } catch (error) {
    if (error instanceof DiffError && error.code === 'UNSUPPORTED') {
      return { section, id, ok: null, maxAbsDiff: null, detail: error.message };
    }
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    return { section, id, ok: false, maxAbsDiff: null, detail: message };
  }
}
