import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { readRefs, RefsError } from './refs.js';
import { SECTION_NAMES, hasFailures, isSectionName, type CaseResult, type Report, type SectionName } from './report.js';
import { runConformance } from './run.js';

export const USAGE = `usage: npm run conformance -- --refs FILE [--models DIR] [--json] [--strict] [--section NAME]...

Checks @diff/core against a refs file in the format of ../shared/conformance/README.md.
  --refs FILE       the refs.json to check against
  --models DIR      the folder holding tiny-sd/, tiny-sdxl/, … (default: the refs file's folder)
  --json            print one JSON object instead of tables
  --strict          count unsupported cases as failures (on whenever the CI environment variable is set)
  --section NAME    check only this section (repeatable): ${SECTION_NAMES.join(', ')}

Exit status: 0 when no case failed (unsupported cases are failures only with --strict or in CI), 1 when one did,
2 on bad arguments.`;

export interface CliOptions {
  refs: string;
  modelsDir: string;
  json: boolean;
  /** Unsupported cases fail the run: --strict, or any CI (a renamed pipeline must not pass as 'unsupported'). */
  strict: boolean;
  /** Empty: every section. */
  sections: SectionName[];
}

/** Bad command-line arguments: the CLI prints the message and the usage and exits with 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The CI convention: `CI` set to anything but '', 'false' or '0'. */
export function isCi(env: Readonly<Record<string, string | undefined>>): boolean {
  return env.CI !== undefined && !['', 'false', '0'].includes(env.CI);
}

/**
 * Relative paths are taken from `cwd` (where the user ran npm, not the package folder npm runs the script in);
 * `env` decides whether this is CI.
 */
export function parseCliArgs(argv: readonly string[], cwd: string, env: Readonly<Record<string, string | undefined>> = {}): CliOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        refs: { type: 'string' },
        models: { type: 'string' },
        json: { type: 'boolean', default: false },
        strict: { type: 'boolean', default: false },
        section: { type: 'string', multiple: true, default: [] },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return 'help';
  if (!values.refs) throw new UsageError('--refs FILE is required');
  const unknown = values.section.filter((name) => !isSectionName(name));
  if (unknown.length > 0) {
    throw new UsageError(`unknown section ${unknown.join(', ')}; sections: ${SECTION_NAMES.join(', ')}`);
  }
  const refs = resolve(cwd, values.refs);
  return {
    refs,
    modelsDir: values.models ? resolve(cwd, values.models) : dirname(refs),
    json: values.json,
    strict: values.strict || isCi(env),
    sections: values.section.filter(isSectionName),
  };
}

function formatResult(ok: boolean | null): string {
  if (ok === null) return 'unsupported';
  return ok ? 'ok' : 'FAIL';
}

function formatDiff(maxAbsDiff: number | null): string {
  if (maxAbsDiff === null) return '-';
  return maxAbsDiff === 0 ? '0' : maxAbsDiff.toExponential(2);
}

function formatRows(cases: readonly CaseResult[]): string[] {
  const rows = [
    ['case', 'result', 'max abs diff', 'detail'],
    ...cases.map((c) => [c.id, formatResult(c.ok), formatDiff(c.maxAbsDiff), c.detail]),
  ];
  const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) => `  ${row.map((cell, column) => (column < 3 ? cell.padEnd(widths[column]) : cell)).join('  ')}`.trimEnd());
}

/** A table per section (all seven, or the chosen ones), then the totals. */
export function formatReport(report: Report, sections: readonly SectionName[] = [], strict = false): string {
  const shown = sections.length > 0 ? SECTION_NAMES.filter((name) => sections.includes(name)) : SECTION_NAMES;
  const lines: string[] = [];
  const totals = { passed: 0, failed: 0, unsupported: 0 };
  for (const section of shown) {
    const { passed, failed, unsupported } = report.sections[section];
    totals.passed += passed;
    totals.failed += failed;
    totals.unsupported += unsupported;
    lines.push(`${section}: ${passed} passed, ${failed} failed, ${unsupported} unsupported`);
    const cases = report.cases.filter((c) => c.section === section);
    lines.push(...(cases.length > 0 ? formatRows(cases) : ['  (no cases)']), '');
  }
  const strictNote = strict && totals.unsupported > 0 ? ' (strict: unsupported cases fail)' : '';
  lines.push(`conformance: ${totals.passed} passed, ${totals.failed} failed, ${totals.unsupported} unsupported${strictNote}`);
  return lines.join('\n');
}

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  cwd: string;
  /** The environment (CI turns --strict on). Default: none. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** The whole command; returns the exit status. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let report: Report;
  let options: CliOptions;
  try {
    const parsed = parseCliArgs(argv, io.cwd, io.env);
    if (parsed === 'help') {
      io.stdout(`${USAGE}\n`);
      return 0;
    }
    options = parsed;
    report = await runConformance(await readRefs(options.refs), { modelsDir: options.modelsDir, sections: options.sections });
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`conformance: ${error.message}\n\n${USAGE}\n`);
      return 2;
    }
    if (error instanceof RefsError) {
      io.stderr(`conformance: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  io.stdout(options.json ? `${JSON.stringify(report)}\n` : `${formatReport(report, options.sections, options.strict)}\n`);
  return hasFailures(report, options.strict) ? 1 : 0;
}
