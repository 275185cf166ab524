/**
 * Parses JSON written by Python's `json` module, which emits bare `NaN`, `Infinity` and `-Infinity` for
 * non-finite floats (diffusers' `DPMSolverMultistepScheduler` saves `"lambda_min_clipped": -Infinity`).
 * Those tokens are accepted outside strings only; everything else follows `JSON.parse`, including its errors.
 */
export function parsePythonJson(text: string): unknown {
  const nonFinite = new Map<string, number>();
  // A marker that cannot collide with any string already in the document.
  let marker = '\u0000nonfinite';
  while (text.includes(marker)) marker += '\u0000';

  let standard = '';
  let copiedUpTo = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (inString) {
      if (char === '\\') i++;
      else if (char === '"') inString = false;
      continue;
    }
    if (char === '"') {
      inString = true;
      continue;
    }
    const token = ['NaN', 'Infinity', '-Infinity'].find((candidate) => text.startsWith(candidate, i));
    if (token === undefined) continue;
    const placeholder = `${marker}${nonFinite.size}`;
    nonFinite.set(placeholder, Number(token));
    standard += `${text.slice(copiedUpTo, i)}${JSON.stringify(placeholder)}`;
    i += token.length - 1;
    copiedUpTo = i + 1;
  }
  standard += text.slice(copiedUpTo);

  if (nonFinite.size === 0) return JSON.parse(text);
  return JSON.parse(standard, (_key, value: unknown) =>
    typeof value === 'string' && nonFinite.has(value) ? nonFinite.get(value) : value,
  );
}
