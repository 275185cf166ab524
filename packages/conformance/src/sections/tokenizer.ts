import { join } from 'node:path';
import { CLIPTokenizer, UnsupportedError } from '@diff/core';
import { EXACT, runChecks } from '../compare.js';
import type { TokenizerCase, TokenizerRefs } from '../refs.js';
import { settleCase, type CaseOutcome, type CaseResult } from '../report.js';

const PROMPT_SHOWN = 40;

/** `#3 "a photo of …"`: the index keeps ids unique, the prompt makes them readable. */
function caseId(index: number, prompt: string): string {
  const shown = prompt.length > PROMPT_SHOWN ? `${prompt.slice(0, PROMPT_SHOWN)}…` : prompt;
  return `#${index} ${JSON.stringify(shown)}`;
}

function checkTokenizerCase(
  testCase: TokenizerCase,
  tokenizer: CLIPTokenizer,
  bangPaddedTokenizer: CLIPTokenizer,
): CaseOutcome {
  const fixedLength = { padding: 'max_length', truncation: true } as const;
  const outcome = runChecks(
    [
      { label: 'ids', actual: tokenizer.encode(testCase.prompt, fixedLength), expected: testCase.ids, tolerance: EXACT },
      {
        label: 'ids_untruncated',
        actual: tokenizer.encode(testCase.prompt),
        expected: testCase.ids_untruncated,
        tolerance: EXACT,
      },
      {
        label: 'ids_pad_bang',
        actual: bangPaddedTokenizer.encode(testCase.prompt, fixedLength),
        expected: testCase.ids_pad_bang,
        tolerance: EXACT,
      },
    ],
    'ids, ids_untruncated, ids_pad_bang equal',
  );
  // A distance between token ids means nothing.
  return { ...outcome, maxAbsDiff: null };
}

/**
 * The references tokenize with SD's tokenizer (pad <|endoftext|>) and with pad "!" — SDXL's second tokenizer, which
 * shares SD's vocabulary and merges.
 */
export async function checkTokenizerSection(refs: TokenizerRefs, modelsDir: string): Promise<CaseResult[]> {
  let tokenizers: Promise<[CLIPTokenizer, CLIPTokenizer]> | undefined;
  const loadTokenizers = () =>
    (tokenizers ??= Promise.all([
      CLIPTokenizer.fromPretrained(join(modelsDir, 'tiny-sd', 'tokenizer')),
      CLIPTokenizer.fromPretrained(join(modelsDir, 'tiny-sdxl', 'tokenizer_2')),
    ]));
  const results: CaseResult[] = [];
  for (const [index, testCase] of refs.cases.entries()) {
    results.push(
      await settleCase('tokenizer', caseId(index, testCase.prompt), async () => {
        if (refs.class !== undefined && refs.class !== 'CLIPTokenizer') {
          throw new UnsupportedError(`tokenizer class ${refs.class} is not implemented`);
        }
        const [tokenizer, bangPaddedTokenizer] = await loadTokenizers();
        return checkTokenizerCase(testCase, tokenizer, bangPaddedTokenizer);
      }),
    );
  }
  return results;
}
