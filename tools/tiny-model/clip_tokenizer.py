"""A small CLIP-BPE tokenizer: building its vocab/merges, and encoding exactly as
transformers' CLIPTokenizer does (NFC, whitespace clean, lowercase, CLIP regex,
bytes_to_unicode, </w> on the last symbol, BPE by merge rank, [bos]+ids+[eos],
padded with eos to 77)."""
import json
import os
import re
import unicodedata

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LEN = 77
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()


def _is_letter(ch):
    return unicodedata.category(ch).startswith("L")


def _is_number(ch):
    return unicodedata.category(ch).startswith("N")


def pre_tokenize(text: str):
    """normalise + the CLIP split regex
    <\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"""
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"\s+", " ", text).strip().lower()
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        hit = next((s for s in (BOS, EOS) + CONTRACTIONS if text.startswith(s, i)), None)
        if hit:
            out.append(hit)
            i += len(hit)
        elif _is_letter(ch):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
            out.append(text[i:j])
            i = j
        elif _is_number(ch):
            out.append(ch)
            i += 1
        elif not ch.isspace():
            j = i + 1
            while j < n and not (text[j].isspace() or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
            out.append(text[i:j])
            i = j
        else:
            i += 1
    return out


def _pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class CLIPTokenizer:
    def __init__(self, vocab: dict, merges: list):
        self.encoder = vocab
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.cache = {BOS: BOS, EOS: EOS}
        self.bos_id, self.eos_id = vocab[BOS], vocab[EOS]

    @classmethod
    def load(cls, folder):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().strip().split("\n")[1:]
        return cls(vocab, [tuple(l.split()) for l in lines])

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return [token + "</w>"]
        while True:
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        self.cache[token] = list(word)
        return list(word)

    def tokenize(self, text):
        toks = []
        for piece in pre_tokenize(text):
            if piece in (BOS, EOS):
                toks.append(piece)
                continue
            piece = "".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))
            toks.extend(self.bpe(piece))
        return toks

    def __call__(self, text):
        """ids padded/truncated to 77: [bos] + ids + [eos] + [eos]*pad"""
        ids = [self.encoder.get(t, self.eos_id) for t in self.tokenize(text)][: MAX_LEN - 2]
        ids = [self.bos_id] + ids + [self.eos_id]
        return ids + [self.eos_id] * (MAX_LEN - len(ids))


def build(words):
    """BPE-train merges on `words` until each word is one symbol; returns (vocab, merges)."""
    byte_syms = list(BYTE_ENCODER.values())
    segs = {}
    for w in sorted(set(words)):
        s = "".join(BYTE_ENCODER[b] for b in w.encode("utf-8"))
        segs[w] = tuple(s[:-1]) + (s[-1] + "</w>",)
    merges = []
    while True:
        counts = {}
        for seg in segs.values():
            for i in range(len(seg) - 1):
                counts[(seg[i], seg[i + 1])] = counts.get((seg[i], seg[i + 1]), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, seg in segs.items():
            new, i = [], 0
            while i < len(seg):
                if i < len(seg) - 1 and (seg[i], seg[i + 1]) == best:
                    new.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    new.append(seg[i])
                    i += 1
            segs[w] = tuple(new)
    vocab_list = byte_syms + [s + "</w>" for s in byte_syms]
    for a, b in merges:
        if a + b not in vocab_list:
            vocab_list.append(a + b)
    vocab_list += [BOS, EOS]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    tok = CLIPTokenizer(vocab, merges)
    for w in words:  # every grammar word must be a single token
        t = tok.tokenize(w)
        assert len(t) == 1 and t[0] == w + "</w>", (w, t)
    return vocab, merges


def save(folder, vocab, merges):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    cfg = {
        "add_prefix_space": False,
        **special,
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "tokenizer_class": "CLIPTokenizer",
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
