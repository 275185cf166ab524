import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { readConfigFile } from '../util/config-file.js';

/**
 * A CLIP tokenizer that gives the same ids as transformers 5's `CLIPTokenizer` (the Hugging Face tokenizers backend):
 * NFC + whitespace-collapse + lowercase normalisation, CLIP's pre-tokenisation regex, byte-level BPE with `</w>` word
 * ends, and the config's special tokens matched inside prompts.
 */

export interface CLIPTokenizerFiles {
  /** vocab.json: token string → id. */
  vocab: Record<string, number>;
  /** Lines of merges.txt, with or without the `#version` line. */
  merges: string[];
  /** tokenizer_config.json merged with special_tokens_map.json. */
  config?: Record<string, unknown>;
}

export interface CLIPEncodeOptions {
  /** 'max_length' pads to `maxLength` with the pad token; false leaves the length as it is. */
  padding?: 'max_length' | false;
  /** Cut the prompt's tokens so that bos + tokens + eos fits `maxLength`. */
  truncation?: boolean;
  /** Defaults to `modelMaxLength`. */
  maxLength?: number;
}

type MergePair = readonly [string, string];

/** A token the tokenizer matches as a whole inside prompts (bos, eos, pad, …), as HF's AddedToken. */
interface AddedToken {
  content: string;
  /** Matched in the normalised text (so case-insensitively for CLIP) rather than in the raw prompt. */
  normalized: boolean;
  /** Set when the config names the id (added_tokens_decoder, tokenizer.json added_tokens). */
  id?: number;
}

interface TokenMatcher {
  pattern: RegExp;
  idByText: Map<string, number>;
}

type Segment = { text: string } | { addedTokenId: number; matched: string };

/** Describes where a bad value came from, as the error the caller's entry point throws. */
type LoadFailure = (source: string, message: string) => Error;

const DEFAULT_MODEL_MAX_LENGTH = 77;
const DEFAULT_BOS_TOKEN = '<|startoftext|>';
const DEFAULT_EOS_TOKEN = '<|endoftext|>';
const DEFAULT_UNK_TOKEN = '<|endoftext|>';
const END_OF_WORD_SUFFIX = '</w>';
/** transformers adds the named special tokens in this order; for a repeated content the first one's flags win. */
const SPECIAL_TOKEN_KEYS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
] as const;

/** Oniguruma's `\s` (used by HF tokenizers) is Unicode White_Space; JS `\s` differs (U+0085, U+FEFF). */
const WHITESPACE_RUN = /\p{White_Space}+/gu;
/** CLIP's Split pre-tokenizer: keeps the matches, drops what lies between them (whitespace). */
const CLIP_PIECE =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}]+/gu;
/**
 * The ByteLevel pre-tokenizer then splits each piece with GPT-2's regex (written here without its whitespace
 * branches: pieces hold none). It only changes special-token text that was not matched as a special token, e.g.
 * "<|endoftext|>" → "<|", "endoftext", "|>".
 */
const BYTE_LEVEL_PIECE = /'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\p{White_Space}\p{L}\p{N}]+/gu;

const BYTE_TO_UNICODE = buildBytesToUnicode();
const UTF8 = new TextEncoder();

/**
 * GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards, so
 * every byte is a visible character in vocab.json.
 */
function buildBytesToUnicode(): string[] {
  const table = new Array<string>(256);
  let nextCodePoint = 256;
  for (let byte = 0; byte < 256; byte++) {
    const printable =
      (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    table[byte] = String.fromCodePoint(printable ? byte : nextCodePoint++);
  }
  return table;
}

/** The tokenizers normalizer sequence NFC → Replace(\s+, " ") → Lowercase. */
function normalize(text: string): string {
  const collapsed = text.normalize('NFC').replace(WHITESPACE_RUN, ' ');
  // Lowercase code point by code point, as Rust's char::to_lowercase: no final-sigma rule ("ΟΔΟΣ" → "οδοσ").
  let lowered = '';
  for (const char of collapsed) lowered += char.toLowerCase();
  return lowered;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

/** A special token in a config: a plain string, or an AddedToken object `{content, normalized, …}`. */
function parseAddedToken(value: unknown, source: string, key: string, fail: LoadFailure): AddedToken | undefined {
  if (value === undefined || value === null) return undefined;
  // transformers turns a plain string into a special AddedToken with normalized=false.
  if (typeof value === 'string') return { content: value, normalized: false };
  if (isRecord(value) && typeof value.content === 'string') {
    return { content: value.content, normalized: value.normalized === true };
  }
  throw fail(source, `${key} must be a string or an AddedToken object with a string "content"`);
}

function parseVocab(vocab: unknown, source: string, fail: LoadFailure): Map<string, number> {
  if (!isRecord(vocab)) throw fail(source, 'expected a JSON object mapping token strings to integer ids');
  const ids = new Map<string, number>();
  for (const [token, id] of Object.entries(vocab)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw fail(
        source,
        `expected a non-negative integer id for token ${JSON.stringify(token)}, got ${JSON.stringify(id)}`
      );
    }
    ids.set(token, id);
  }
  return ids;
}

/** One "a b" merge line; undefined when the line is not two space-separated symbols. */
function parseMergeLine(line: string): MergePair | undefined {
  const parts = line.split(' ');
  return parts.length === 2 && parts[0] !== '' && parts[1] !== '' ? [parts[0], parts[1]] : undefined;
}

/** merges.txt lines after an optional `#version` line; blank lines (a trailing newline) are skipped. */
function parseMergeLines(lines: unknown, source: string, fail: LoadFailure): MergePair[] {
  if (!Array.isArray(lines)) throw fail(source, 'expected an array of "a b" merge lines');
  const pairs: MergePair[] = [];
  lines.forEach((line: unknown, index) => {
    if (typeof line !== 'string') throw fail(source, `line ${index + 1}: expected a string`);
    const withoutCarriageReturn = line.replace(/\r$/, '');
    if (withoutCarriageReturn === '' || withoutCarriageReturn.startsWith('#version')) return;
    const pair = parseMergeLine(withoutCarriageReturn);
    if (!pair)
      throw fail(source, `line ${index + 1}: expected two space-separated symbols, got ${JSON.stringify(line)}`);
    pairs.push(pair);
  });
  return pairs;
}

/** tokenizer.json `model.merges`: "a b" strings (older files) or [a, b] pairs (newer files). */
function parseTokenizerJsonMerges(merges: unknown, source: string, fail: LoadFailure): MergePair[] {
  if (!Array.isArray(merges)) throw fail(source, 'model.merges must be an array');
  return merges.map((merge: unknown, index): MergePair => {
    const pair =
      typeof merge === 'string'
        ? parseMergeLine(merge)
        : Array.isArray(merge) && merge.length === 2 && merge.every((part) => typeof part === 'string')
        ? ([merge[0], merge[1]] as MergePair)
        : undefined;
    if (!pair) throw fail(source, `model.merges[${index}] must be an "a b" string or an [a, b] pair`);
    return pair;
  });
}

/** tokenizer.json `added_tokens` in tokenizer_config.json's `added_tokens_decoder` form (id → AddedToken). */
function addedTokensAsDecoder(addedTokens: unknown, source: string, fail: LoadFailure): Record<string, unknown> {
  if (addedTokens === undefined) return {};
  if (!Array.isArray(addedTokens)) throw fail(source, 'added_tokens must be an array');
  const decoder: Record<string, unknown> = {};
  addedTokens.forEach((token: unknown, index) => {
    if (!isRecord(token) || typeof token.id !== 'number' || typeof token.content !== 'string') {
      throw fail(source, `added_tokens[${index}] must be an object with a numeric "id" and a string "content"`);
    }
    decoder[String(token.id)] = token;
  });
  return decoder;
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readOptionalJsonObject(path: string): Promise<Record<string, unknown>> {
  return (await pathExists(path)) ? readConfigFile(path, 'a JSON object') : {};
}

export class CLIPTokenizer {
  /** The length `call` pads and truncates to by default (77 for Stable Diffusion's text encoders). */
  readonly modelMaxLength: number;
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;

  private readonly vocab: Map<string, number>;
  /** "a b" → merge priority (lower merges first). Byte-level symbols hold no space, so the key is unambiguous. */
  private readonly mergeRanks: Map<string, number>;
  private readonly unkTokenId: number;
  /** Added tokens matched in the prompt as typed, before normalisation. */
  private readonly rawTokenMatcher: TokenMatcher | undefined;
  /** Added tokens matched after normalisation. */
  private readonly normalizedTokenMatcher: TokenMatcher | undefined;
  /** Words recur across prompts (and "a", "of" within one), so BPE results are kept per piece. */
  private readonly bpeCache = new Map<string, string[]>();

  private constructor(
    vocab: Map<string, number>,
    merges: readonly MergePair[],
    config: Record<string, unknown>,
    sources: { vocab: string; merges: string; config: string },
    fail: LoadFailure
  ) {
    this.vocab = vocab;
    this.mergeRanks = new Map();
    merges.forEach(([first, second], rank) => {
      for (const symbol of [first, second, first + second]) {
        if (!vocab.has(symbol)) {
          throw fail(
            sources.merges,
            `merge ${rank + 1} ("${first} ${second}") uses ${JSON.stringify(symbol)}, which is not in the vocabulary`
          );
        }
      }
      // A repeated pair keeps its last rank, as in HF tokenizers' merge map.
      this.mergeRanks.set(`${first} ${second}`, rank);
    });

    const maxLength = config.model_max_length ?? DEFAULT_MODEL_MAX_LENGTH;
    if (!isPositiveInteger(maxLength)) {
      throw fail(sources.config, `model_max_length must be a positive integer, got ${JSON.stringify(maxLength)}`);
    }
    this.modelMaxLength = maxLength;

    const specialTokens = new Map<string, AddedToken>();
    for (const key of SPECIAL_TOKEN_KEYS) {
      const token = parseAddedToken(config[key], sources.config, key, fail);
      if (token) specialTokens.set(key, token);
    }
    const bos = specialTokens.get('bos_token') ?? { content: DEFAULT_BOS_TOKEN, normalized: false };
    const eos = specialTokens.get('eos_token') ?? { content: DEFAULT_EOS_TOKEN, normalized: false };
    const unk = specialTokens.get('unk_token') ?? { content: DEFAULT_UNK_TOKEN, normalized: false };
    const pad = specialTokens.get('pad_token') ?? eos;
    specialTokens.set('bos_token', bos).set('eos_token', eos).set('unk_token', unk).set('pad_token', pad);

    const addedTokens = [
      ...parseAddedTokensDecoder(config.added_tokens_decoder, sources.config, fail),
      ...SPECIAL_TOKEN_KEYS.flatMap((key) => specialTokens.get(key) ?? []),
      ...parseAdditionalSpecialTokens(config.additional_special_tokens, sources.config, fail),
    ];
    const addedTokenIds = assignAddedTokenIds(addedTokens, vocab);
    this.bosTokenId = addedTokenIds.get(bos.content)!;
    this.eosTokenId = addedTokenIds.get(eos.content)!;
    this.unkTokenId = addedTokenIds.get(unk.content)!;
    this.padTokenId = addedTokenIds.get(pad.content)!;

    // For a content given twice, HF keeps the first token's flags.
    const firstByContent = new Map<string, AddedToken>();
    for (const token of addedTokens) if (!firstByContent.has(token.content)) firstByContent.set(token.content, token);
    const uniqueTokens = [...firstByContent.values()];
    this.rawTokenMatcher = buildTokenMatcher(
      uniqueTokens.filter((token) => !token.normalized),
      (token) => token.content,
      addedTokenIds
    );
    this.normalizedTokenMatcher = buildTokenMatcher(
      uniqueTokens.filter((token) => token.normalized),
      (token) => normalize(token.content),
      addedTokenIds
    );
  }

  /**
   * Loads a transformers tokenizer folder: vocab.json + merges.txt (+ tokenizer_config.json, special_tokens_map.json),
   * or a tokenizers-format tokenizer.json alone (+ the same optional configs).
   */
  static async fromPretrained(dir: string): Promise<CLIPTokenizer> {
    if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError('dir must be a non-empty folder path');
    if (!(await pathExists(dir))) throw new ModelLoadError(dir, 'tokenizer folder not found');
    const configPath = join(dir, 'tokenizer_config.json');
    const specialTokensMapPath = join(dir, 'special_tokens_map.json');
    // special_tokens_map.json overrides tokenizer_config.json, as transformers does when loading.
    const config = {
      ...(await readOptionalJsonObject(configPath)),
      ...(await readOptionalJsonObject(specialTokensMapPath)),
    };
    const fail: LoadFailure = (source, message) => new ModelLoadError(source, message);

    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const tokenizerJsonPath = join(dir, 'tokenizer.json');
    if (await pathExists(vocabPath)) {
      const vocab = parseVocab(await readConfigFile(vocabPath, 'a JSON object mapping token strings to integer ids'), vocabPath, fail);
      if (!(await pathExists(mergesPath))) {
        throw new ModelLoadError(
          mergesPath,
          'missing: vocab.json needs merges.txt (BPE merges, one "a b" pair a line)'
        );
      }
      let mergesText: string;
      try {
        mergesText = await readFile(mergesPath, 'utf8');
      } catch (error) {
        throw new ModelLoadError(mergesPath, 'cannot read the BPE merges file', { cause: error });
      }
      const merges = parseMergeLines(mergesText.split('\n'), mergesPath, fail);
      return new CLIPTokenizer(
        vocab,
        merges,
        config,
        { vocab: vocabPath, merges: mergesPath, config: configPath },
        fail
      );
    }
    if (await pathExists(tokenizerJsonPath)) {
      const tokenizerJson = await readConfigFile(tokenizerJsonPath, 'a tokenizers JSON object');
      if (!isRecord(tokenizerJson.model)) {
        throw new ModelLoadError(tokenizerJsonPath, 'expected a tokenizers JSON object with a "model" object');
      }
      const { model } = tokenizerJson;
      if (model.type !== undefined && model.type !== 'BPE') {
        throw new ModelLoadError(
          tokenizerJsonPath,
          `expected a BPE model, got model.type ${JSON.stringify(model.type)}`
        );
      }
      const vocab = parseVocab(model.vocab, tokenizerJsonPath, (source, message) =>
        fail(source, `model.vocab: ${message}`)
      );
      const merges = parseTokenizerJsonMerges(model.merges, tokenizerJsonPath, fail);
      const configWithAddedTokens = {
        ...config,
        added_tokens_decoder: {
          ...addedTokensAsDecoder(tokenizerJson.added_tokens, tokenizerJsonPath, fail),
          ...(isRecord(config.added_tokens_decoder) ? config.added_tokens_decoder : {}),
        },
      };
      return new CLIPTokenizer(
        vocab,
        merges,
        configWithAddedTokens,
        { vocab: tokenizerJsonPath, merges: tokenizerJsonPath, config: configPath },
        fail
      );
    }
    throw new ModelLoadError(
      vocabPath,
      'missing: a CLIP tokenizer folder needs vocab.json + merges.txt, or tokenizer.json'
    );
  }

  /** Builds a tokenizer from already-parsed files. */
  static fromFiles(files: CLIPTokenizerFiles): CLIPTokenizer {
    if (!isRecord(files)) throw new InvalidArgumentError('files must be an object { vocab, merges, config? }');
    const fail: LoadFailure = (source, message) => new InvalidArgumentError(`${source}: ${message}`);
    const config = files.config ?? {};
    if (!isRecord(config)) throw new InvalidArgumentError('files.config must be an object when given');
    const vocab = parseVocab(files.vocab, 'files.vocab', fail);
    const merges = parseMergeLines(files.merges, 'files.merges', fail);
    return new CLIPTokenizer(
      vocab,
      merges,
      config,
      { vocab: 'files.vocab', merges: 'files.merges', config: 'files.config' },
      fail
    );
  }

  /** The prompt's tokens (BPE symbols with `</w>` word ends, special tokens as their text), without bos/eos. */
  tokenize(text: string): string[] {
    return this.tokenizeToPairs(text).map(([token]) => token);
  }

  /** `[bos] + ids + [eos]`; no padding or truncation unless asked for. */
  encode(text: string, options: CLIPEncodeOptions = {}): number[] {
    const { padding = false, truncation = false, maxLength = this.modelMaxLength } = options;
    validateEncodeOptions(padding, truncation, maxLength);
    const ids = this.tokenizeToPairs(text).map(([, id]) => id);
    const body = truncation ? ids.slice(0, maxLength - 2) : ids;
    const encoded = [this.bosTokenId, ...body, this.eosTokenId];
    if (padding === 'max_length') {
      while (encoded.length < maxLength) encoded.push(this.padTokenId);
    }
    return encoded;
  }

  /** What diffusers passes: padded to and truncated at `modelMaxLength` unless told otherwise. */
  call(prompts: string | readonly string[], options: CLIPEncodeOptions = {}): { inputIds: number[][] } {
    const list = typeof prompts === 'string' ? [prompts] : prompts;
    if (!Array.isArray(list)) throw new InvalidArgumentError('prompts must be a string or an array of strings');
    const { padding = 'max_length', truncation = true, maxLength = this.modelMaxLength } = options;
    return { inputIds: list.map((prompt) => this.encode(prompt, { padding, truncation, maxLength })) };
  }

  private tokenizeToPairs(text: string): Array<[token: string, id: number]> {
    if (typeof text !== 'string') throw new InvalidArgumentError(`text must be a string, got ${typeof text}`);
    const pairs: Array<[string, number]> = [];
    for (const rawSegment of splitOnAddedTokens(text, this.rawTokenMatcher)) {
      if (!('text' in rawSegment)) {
        pairs.push([rawSegment.matched, rawSegment.addedTokenId]);
        continue;
      }
      for (const segment of splitOnAddedTokens(normalize(rawSegment.text), this.normalizedTokenMatcher)) {
        if (!('text' in segment)) {
          pairs.push([segment.matched, segment.addedTokenId]);
          continue;
        }
        for (const [piece] of segment.text.matchAll(CLIP_PIECE)) {
          for (const [word] of piece.matchAll(BYTE_LEVEL_PIECE)) {
            for (const symbol of this.bpe(word)) pairs.push([symbol, this.vocab.get(symbol) ?? this.unkTokenId]);
          }
        }
      }
    }
    return pairs;
  }

  /** Byte-level BPE of one word: repeatedly merge every occurrence of the lowest-ranked adjacent pair. */
  private bpe(word: string): string[] {
    const cached = this.bpeCache.get(word);
    if (cached) return cached;
    let symbols = Array.from(UTF8.encode(word), (byte) => BYTE_TO_UNICODE[byte]);
    symbols[symbols.length - 1] += END_OF_WORD_SUFFIX;
    while (symbols.length > 1) {
      let bestRank = Infinity;
      let bestIndex = -1;
      for (let index = 0; index < symbols.length - 1; index++) {
        const rank = this.mergeRanks.get(`${symbols[index]} ${symbols[index + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          bestIndex = index;
        }
      }
      if (bestIndex < 0) break;
      const first = symbols[bestIndex];
      const second = symbols[bestIndex + 1];
      const merged: string[] = symbols.slice(0, bestIndex);
      for (let index = bestIndex; index < symbols.length; index++) {
        if (index < symbols.length - 1 && symbols[index] === first && symbols[index + 1] === second) {
          merged.push(first + second);
          index++;
        } else {
          merged.push(symbols[index]);
        }
      }
      symbols = merged;
    }
    this.bpeCache.set(word, symbols);
    return symbols;
  }
}

function parseAddedTokensDecoder(decoder: unknown, source: string, fail: LoadFailure): AddedToken[] {
  if (decoder === undefined || decoder === null) return [];
  if (!isRecord(decoder)) throw fail(source, 'added_tokens_decoder must be an object of id → AddedToken');
  return Object.entries(decoder)
    .map(([id, value]): AddedToken => {
      const token = parseAddedToken(value, source, `added_tokens_decoder[${id}]`, fail);
      if (!token || !/^\d+$/.test(id)) {
        throw fail(source, `added_tokens_decoder[${id}] must map a non-negative integer id to an AddedToken`);
      }
      return { ...token, id: Number(id) };
    })
    .sort((a, b) => a.id! - b.id!);
}

function parseAdditionalSpecialTokens(tokens: unknown, source: string, fail: LoadFailure): AddedToken[] {
  if (tokens === undefined || tokens === null) return [];
  if (!Array.isArray(tokens)) throw fail(source, 'additional_special_tokens must be an array');
  return tokens.map((value: unknown, index) => {
    const token = parseAddedToken(value, source, `additional_special_tokens[${index}]`, fail);
    if (!token) throw fail(source, `additional_special_tokens[${index}] must not be null`);
    return token;
  });
}

/** A declared id wins, then the vocabulary's id; tokens in neither get ids after the vocabulary, as HF does. */
function assignAddedTokenIds(tokens: readonly AddedToken[], vocab: ReadonlyMap<string, number>): Map<string, number> {
  const ids = new Map<string, number>();
  let nextId = vocab.size;
  for (const token of tokens) {
    if (token.id !== undefined && !ids.has(token.content)) ids.set(token.content, token.id);
    nextId = Math.max(nextId, (token.id ?? -1) + 1);
  }
  for (const token of tokens) {
    if (ids.has(token.content)) continue;
    const vocabId = vocab.get(token.content);
    ids.set(token.content, vocabId ?? nextId++);
  }
  return ids;
}

function buildTokenMatcher(
  tokens: readonly AddedToken[],
  matchText: (token: AddedToken) => string,
  ids: ReadonlyMap<string, number>
): TokenMatcher | undefined {
  const idByText = new Map<string, number>();
  for (const token of tokens) {
    const text = matchText(token);
    if (text !== '' && !idByText.has(text)) idByText.set(text, ids.get(token.content)!);
  }
  if (idByText.size === 0) return undefined;
  // Longest first, so that the alternation finds the leftmost-longest match as HF's Aho-Corasick does.
  const alternatives = [...idByText.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
  return { pattern: new RegExp(alternatives.join('|'), 'gu'), idByText };
}

function splitOnAddedTokens(text: string, matcher: TokenMatcher | undefined): Segment[] {
  if (!matcher) return [{ text }];
  const segments: Segment[] = [];
  let start = 0;
  for (const match of text.matchAll(matcher.pattern)) {
    if (match.index > start) segments.push({ text: text.slice(start, match.index) });
    segments.push({ addedTokenId: matcher.idByText.get(match[0])!, matched: match[0] });
    start = match.index + match[0].length;
  }
  if (start < text.length) segments.push({ text: text.slice(start) });
  return segments;
}

function validateEncodeOptions(padding: unknown, truncation: unknown, maxLength: unknown): asserts maxLength is number {
  if (padding !== 'max_length' && padding !== false) {
    throw new InvalidArgumentError(`padding must be 'max_length' or false, got ${JSON.stringify(padding)}`);
  }
  if (typeof truncation !== 'boolean') {
    throw new InvalidArgumentError(`truncation must be a boolean, got ${JSON.stringify(truncation)}`);
  }
  if (typeof maxLength !== 'number' || !Number.isInteger(maxLength) || maxLength < 2) {
    throw new InvalidArgumentError(
      `maxLength must be an integer ≥ 2 (room for bos and eos), got ${JSON.stringify(maxLength)}`
    );
  }
}
