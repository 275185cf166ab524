import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { CLIPTokenizer } from './clip-tokenizer.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const fixtures = join(here, '__fixtures__');
const tinyDir = join(fixtures, 'clip-tiny');
const tinyJsonDir = join(fixtures, 'clip-tiny-json');

// Ids in the hand-made vocabulary (__fixtures__/clip-tiny/vocab.json).
const BANG = 0;
const BANG_END = 12;
const A_END = 16;
const CAT_END = 25;
const THE_END = 27;
const CATS_END = 31;
const APOSTROPHE_S_END = 32;
const E_ACUTE_END = 33;
const BOS = 34;
const EOS = 35;

function readFixture(name: string): unknown {
  return JSON.parse(readFileSync(join(tinyDir, name), 'utf8'));
}

function tinyFiles(config: Record<string, unknown>) {
  return {
    vocab: readFixture('vocab.json') as Record<string, number>,
    merges: readFileSync(join(tinyDir, 'merges.txt'), 'utf8').split('\n'),
    config,
  };
}

const addedToken = (content: string) => ({
  __type: 'AddedToken',
  content,
  lstrip: false,
  normalized: true,
  rstrip: false,
  single_word: false,
});

describe('CLIPTokenizer (hand-made fixture)', () => {
  let tokenizer: CLIPTokenizer;
  beforeAll(async () => {
    tokenizer = await CLIPTokenizer.fromPretrained(tinyDir);
  });

  it('reads the special tokens (AddedToken objects and strings) and model_max_length from the config', () => {
    expect(tokenizer.modelMaxLength).toBe(8);
    expect(tokenizer.bosTokenId).toBe(BOS);
    expect(tokenizer.eosTokenId).toBe(EOS);
    expect(tokenizer.padTokenId).toBe(EOS);
  });

  it('applies BPE merges by rank and marks word ends with </w>', () => {
    expect(tokenizer.tokenize('a cat')).toEqual(['a</w>', 'cat</w>']);
    expect(tokenizer.tokenize('cats')).toEqual(['cats</w>']);
    expect(tokenizer.tokenize('hat the')).toEqual(['hat</w>', 'the</w>']);
    expect(tokenizer.tokenize('ta')).toEqual(['t', 'a</w>']);
  });

  it('normalises: NFC, whitespace runs, lowercase', () => {
    expect(tokenizer.tokenize('  The\tCAT\n\u00a0')).toEqual(['the</w>', 'cat</w>']);
    expect(tokenizer.tokenize('e\u0301')).toEqual(tokenizer.tokenize('\u00e9'));
  });

  it('splits digits singly, contractions and punctuation runs apart', () => {
    expect(tokenizer.tokenize('12')).toEqual(['1</w>', '2</w>']);
    expect(tokenizer.tokenize("cat's")).toEqual(['cat</w>', "'s</w>"]);
    expect(tokenizer.encode("cat's")).toEqual([BOS, CAT_END, APOSTROPHE_S_END, EOS]);
    expect(tokenizer.encode('cat!!')).toEqual([BOS, CAT_END, BANG, BANG_END, EOS]);
  });

  it('maps UTF-8 bytes through bytes_to_unicode before BPE', () => {
    expect(tokenizer.tokenize('\u00e9')).toEqual(['Ã©</w>']);
    expect(tokenizer.encode('\u00e9')).toEqual([BOS, E_ACUTE_END, EOS]);
    // "→" is E2 86 92; 0x86 and 0x92 are unprintable bytes, remapped above U+0100. None is in the vocab: unk.
    expect(tokenizer.tokenize('→')).toEqual(['â', 'Ĩ', 'Ĵ</w>']);
    expect(tokenizer.encode('→')).toEqual([BOS, EOS, EOS, EOS, EOS]);
  });

  it('encodes an empty prompt and a prompt of only spaces as bos, eos', () => {
    expect(tokenizer.tokenize('')).toEqual([]);
    expect(tokenizer.encode('')).toEqual([BOS, EOS]);
    expect(tokenizer.encode('   \t ')).toEqual([BOS, EOS]);
    expect(tokenizer.call('').inputIds).toEqual([[BOS, EOS, EOS, EOS, EOS, EOS, EOS, EOS]]);
  });

  it('turns special-token text inside a prompt into its id, in any case (normalized tokens)', () => {
    expect(tokenizer.encode('a<|endoftext|>cat')).toEqual([BOS, A_END, EOS, CAT_END, EOS]);
    expect(tokenizer.encode('<|StartOfText|> the')).toEqual([BOS, BOS, THE_END, EOS]);
    expect(tokenizer.tokenize('a <|endoftext|>')).toEqual(['a</w>', '<|endoftext|>']);
    // Incomplete special-token text is ordinary punctuation and letters.
    expect(tokenizer.tokenize('<|endoftext').slice(0, 2)).toEqual(['<', '|</w>']);
  });

  it('matches special tokens given as plain strings only as typed (not normalised)', () => {
    const plain = CLIPTokenizer.fromFiles(tinyFiles({ eos_token: '<|endoftext|>', unk_token: '<|endoftext|>' }));
    expect(plain.encode('<|endoftext|>')).toEqual([BOS, EOS, EOS]);
    expect(plain.tokenize('<|ENDOFTEXT|>').slice(0, 2)).toEqual(['<', '|</w>']);
  });

  it('pads to modelMaxLength and truncates keeping bos and eos (call defaults)', () => {
    const prompt = 'a cat a cat a cat a cat';
    expect(tokenizer.call(prompt).inputIds).toEqual([[BOS, A_END, CAT_END, A_END, CAT_END, A_END, CAT_END, EOS]]);
    expect(tokenizer.encode(prompt)).toHaveLength(10);
    expect(tokenizer.encode(prompt, { padding: 'max_length' })).toHaveLength(10);
    expect(tokenizer.encode(prompt, { truncation: true, maxLength: 4 })).toEqual([BOS, A_END, CAT_END, EOS]);
    expect(tokenizer.call(['cats', 'the'], { maxLength: 4 }).inputIds).toEqual([
      [BOS, CATS_END, EOS, EOS],
      [BOS, THE_END, EOS, EOS],
    ]);
    expect(tokenizer.call(prompt, { padding: false, truncation: false }).inputIds[0]).toHaveLength(10);
  });

  it('uses "!" (id 0) as pad when the config says so, and matches "!" in prompts as that token', () => {
    const bangPad = CLIPTokenizer.fromFiles(
      tinyFiles({ ...(readFixture('tokenizer_config.json') as object), pad_token: addedToken('!') })
    );
    expect(bangPad.padTokenId).toBe(BANG);
    expect(bangPad.call('cat!').inputIds[0]).toEqual([BOS, CAT_END, BANG, EOS, BANG, BANG, BANG, BANG]);
    expect(tokenizer.call('cat!').inputIds[0]).toEqual([BOS, CAT_END, BANG_END, EOS, EOS, EOS, EOS, EOS]);
  });

  it('falls back to eos for pad, 77 for model_max_length and the CLIP defaults for bos/eos', () => {
    const bare = CLIPTokenizer.fromFiles(tinyFiles({}));
    expect(bare.modelMaxLength).toBe(77);
    expect([bare.bosTokenId, bare.eosTokenId, bare.padTokenId]).toEqual([BOS, EOS, EOS]);
    expect(bare.call('cat').inputIds[0]).toHaveLength(77);
  });

  it('gives added tokens missing from the vocabulary the ids after it', () => {
    const withExtra = CLIPTokenizer.fromFiles(tinyFiles({ additional_special_tokens: ['<my-token>'] }));
    expect(withExtra.encode('cat<my-token>a')).toEqual([BOS, CAT_END, EOS + 1, A_END, EOS]);
  });

  it('accepts merges with or without the #version line', () => {
    const files = tinyFiles({});
    const withoutVersion = CLIPTokenizer.fromFiles({ ...files, merges: files.merges.slice(1) });
    expect(withoutVersion.encode('cats the hat')).toEqual(CLIPTokenizer.fromFiles(files).encode('cats the hat'));
  });

  it('loads a tokenizer.json-only folder ([a, b] merges, added_tokens) the same way', async () => {
    const fromJson = await CLIPTokenizer.fromPretrained(tinyJsonDir);
    expect(fromJson.modelMaxLength).toBe(77);
    expect([fromJson.bosTokenId, fromJson.eosTokenId, fromJson.padTokenId]).toEqual([BOS, EOS, EOS]);
    for (const prompt of ['a cat', 'cats, the hat!', "cat's 12 \u00e9", 'A<|ENDOFTEXT|>']) {
      expect(fromJson.encode(prompt)).toEqual(tokenizer.encode(prompt));
    }
  });

  describe('loading errors', () => {
    let scratch: string;
    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), 'clip-tokenizer-test-'));
    });
    afterAll(async () => {
      await rm(scratch, { recursive: true, force: true });
    });

    async function folderWith(name: string, files: Record<string, string>): Promise<string> {
      const dir = join(scratch, name);
      await mkdir(dir);
      for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
      return dir;
    }

    async function loadError(dir: string): Promise<ModelLoadError> {
      const error: unknown = await CLIPTokenizer.fromPretrained(dir).then(
        () => undefined,
        (reason: unknown) => reason
      );
      expect(error).toBeInstanceOf(ModelLoadError);
      return error as ModelLoadError;
    }

    it('names a missing folder', async () => {
      const missing = join(scratch, 'does-not-exist');
      expect((await loadError(missing)).path).toBe(missing);
    });

    it('names vocab.json when neither vocab.json nor tokenizer.json exists', async () => {
      const dir = await folderWith('empty', {});
      const error = await loadError(dir);
      expect(error.path).toBe(join(dir, 'vocab.json'));
      expect(error.message).toMatch(/tokenizer\.json/);
    });

    it('names merges.txt when vocab.json has no merges beside it', async () => {
      const dir = await folderWith('no-merges', { 'vocab.json': readFileSync(join(tinyDir, 'vocab.json'), 'utf8') });
      expect((await loadError(dir)).path).toBe(join(dir, 'merges.txt'));
    });

    it('names a vocab.json that is not JSON or not token → id', async () => {
      const broken = await folderWith('broken-vocab', { 'vocab.json': '{"a": ', 'merges.txt': '' });
      expect((await loadError(broken)).path).toBe(join(broken, 'vocab.json'));
      const wrongShape = await folderWith('array-vocab', { 'vocab.json': '["a"]', 'merges.txt': '' });
      const error = await loadError(wrongShape);
      expect(error.path).toBe(join(wrongShape, 'vocab.json'));
      expect(error.message).toMatch(/token strings to integer ids/);
    });

    it('names merges.txt for a malformed line or a merge outside the vocabulary', async () => {
      const vocab = readFileSync(join(tinyDir, 'vocab.json'), 'utf8');
      const malformed = await folderWith('bad-line', {
        'vocab.json': vocab,
        'merges.txt': '#version: 0.2\nc a\nthree part line\n',
      });
      expect((await loadError(malformed)).message).toMatch(/merges\.txt: line 3/);
      const unknown = await folderWith('unknown-symbol', { 'vocab.json': vocab, 'merges.txt': 'x y\n' });
      expect((await loadError(unknown)).path).toBe(join(unknown, 'merges.txt'));
    });

    it('reads "a b" string merges from tokenizer.json and rejects a non-BPE model', async () => {
      const tokenizerJson = JSON.parse(readFileSync(join(tinyJsonDir, 'tokenizer.json'), 'utf8'));
      tokenizerJson.model.merges = tokenizerJson.model.merges.map(([a, b]: [string, string]) => `${a} ${b}`);
      const stringMerges = await folderWith('string-merges', { 'tokenizer.json': JSON.stringify(tokenizerJson) });
      expect((await CLIPTokenizer.fromPretrained(stringMerges)).encode('cats')).toEqual([BOS, CATS_END, EOS]);
      const wordPiece = await folderWith('word-piece', {
        'tokenizer.json': JSON.stringify({ model: { type: 'WordPiece', vocab: {} } }),
      });
      expect((await loadError(wordPiece)).path).toBe(join(wordPiece, 'tokenizer.json'));
    });
  });

  describe('bad arguments', () => {
    it('rejects malformed files given to fromFiles', () => {
      expect(() => CLIPTokenizer.fromFiles({ vocab: { a: 'x' } as never, merges: [] })).toThrow(InvalidArgumentError);
      expect(() => CLIPTokenizer.fromFiles({ ...tinyFiles({}), merges: ['c a b'] })).toThrow(/files\.merges: line 1/);
      expect(() => CLIPTokenizer.fromFiles(tinyFiles({ model_max_length: 0 }))).toThrow(InvalidArgumentError);
      expect(() => CLIPTokenizer.fromFiles(tinyFiles({ pad_token: 5 }))).toThrow(/pad_token/);
    });

    it('rejects bad encode options and non-string prompts', () => {
      expect(() => tokenizer.encode('cat', { maxLength: 1, truncation: true })).toThrow(InvalidArgumentError);
      expect(() => tokenizer.encode('cat', { maxLength: 7.5 })).toThrow(InvalidArgumentError);
      expect(() => tokenizer.encode('cat', { padding: 'longest' as never })).toThrow(InvalidArgumentError);
      expect(() => tokenizer.encode(42 as never)).toThrow(InvalidArgumentError);
      expect(() => tokenizer.call([null as never])).toThrow(InvalidArgumentError);
      expect(() => tokenizer.call(7 as never)).toThrow(InvalidArgumentError);
    });
  });
});

// The shared conformance data (real CLIP vocabulary) lives beside the repository; CI may not have it.
const conformance = SHARED_CONFORMANCE_DIR;

interface TokenizerCase {
  prompt: string;
  ids: number[];
  ids_untruncated: number[];
  ids_pad_bang: number[];
}

const referenceCases: TokenizerCase[] = readSharedRefs<{ tokenizer: { cases: TokenizerCase[] } }>()?.tokenizer.cases ?? [];
const describeWithConformance = referenceCases.length > 0 ? describe : describe.skip;

describeWithConformance('CLIPTokenizer against the transformers references (real CLIP vocabulary)', () => {
  let sd: CLIPTokenizer;
  let sdxlSecond: CLIPTokenizer;
  beforeAll(async () => {
    sd = await CLIPTokenizer.fromPretrained(join(conformance, 'tiny-sd', 'tokenizer'));
    sdxlSecond = await CLIPTokenizer.fromPretrained(join(conformance, 'tiny-sdxl', 'tokenizer_2'));
  });

  for (const testCase of referenceCases) {
    it(JSON.stringify(testCase.prompt), () => {
      expect(sd.call(testCase.prompt).inputIds[0]).toEqual(testCase.ids);
      expect(sd.encode(testCase.prompt)).toEqual(testCase.ids_untruncated);
      expect(sdxlSecond.call(testCase.prompt).inputIds[0]).toEqual(testCase.ids_pad_bang);
    });
  }

  // Ids from Hugging Face tokenizers 0.23 set up as transformers 5's CLIPTokenizer (same vocab and merges).
  it.each([
    [
      '一只可爱的猫在花园里',
      [
        49406, 19759, 222, 34517, 103, 34517, 107, 163, 230, 109, 163, 248, 226, 163, 234, 104, 37746, 101, 164, 232,
        109, 39027, 255, 38283, 490, 49407,
      ],
    ],
    ['مرحبا بالعالم', [49406, 12986, 10948, 25722, 16378, 22625, 16378, 12973, 18843, 12973, 29945, 49407]],
    ['🐱 cat 👨‍👩‍👧 ❤️', [49406, 22979, 2368, 25023, 26304, 964, 356, 1752, 49407]],
    ['ΟΔΟΣ İstanbul café', [49406, 138, 123, 138, 112, 138, 123, 139, 481, 328, 16384, 11231, 15304, 49407]],
    ['a <|ENDOFTEXT|> b<|startoftext|>', [49406, 320, 49407, 321, 49406, 49407]],
  ])('%s', (prompt, ids) => {
    expect(sd.encode(prompt)).toEqual(ids);
  });

  it('matches "!" as the pad token in the SDXL second tokenizer only', () => {
    expect(sd.encode('hello!!')).toEqual([49406, 3306, 748, 49407]);
    expect(sdxlSecond.encode('hello!!')).toEqual([49406, 3306, 0, 0, 49407]);
  });

  it('truncates a long prompt to 77 keeping eos', () => {
    const ids = sd.call('a photo of a cat, '.repeat(40)).inputIds[0];
    expect(ids).toHaveLength(77);
    expect(ids[0]).toBe(49406);
    expect(ids[76]).toBe(49407);
  });
});
