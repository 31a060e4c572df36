"""fastText classification of many texts at once, in numpy, with a token cache.

fastText's `predict` averages the input vectors of every token of a line (the
word's own vector if it is in the vocabulary, plus its hashed character
n-grams) and walks the hierarchical-softmax tree. Most of its cost is
recomputing the character n-grams of every token of every document, although
a corpus repeats the same few thousand words. Here each distinct token's
vector sum is computed once and cached, and the averaging and the output
layer run as matrix operations over a whole part of documents: about 50-70 us
a 1.5 kB document on one core once the cache is warm, against fastText's 230 us.

The model file is parsed directly (format of fastText 0.9, `FastText::loadModel`),
and every step follows fastText's C++ (`Dictionary::getLine`, `computeSubwords`,
`QuantMatrix`, `HierarchicalSoftmaxLoss::dfs`), so labels and probabilities
equal fastText's; only the order of float additions differs (probabilities agree
to ~1e-6). Supported: supervised models with hierarchical softmax, character
n-grams, word n-grams of 1, dense or product-quantized (`.ftz`) matrices - the
shape of lid.176. Anything else raises ValueError when the file is loaded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

_MAGIC = 793712314
_EOS = "</s>"
_LABEL_PREFIX = "__label__"
_LOSS_HS, _MODEL_SUPERVISED = 1, 3
_KSUB = 256  # product quantizer centroids per sub-quantizer (8 bits)
_FNV_OFFSET, _FNV_PRIME = 2166136261, 16777619

CACHE_TOKENS = 200_000
"""Distinct tokens whose vector sums are kept (~13 MB of float32 at dim 16, plus
the tokens); the cache is cleared when full, so memory stays bounded on any corpus."""

HIDDEN_CHUNK = 2_048
"""Texts tokenised and averaged per vectorised step (bounds their token lists
and the gathered (tokens, dim) array)."""

# Python's str.split() separators (Rust's \s lacks \x1c-\x1f) plus NUL, which
# fastText's reader also splits at.
_TOKEN = r"[^\s\x1c-\x1f\x00]+"

# Whitespace other than " " and "\n" (those of _TOKEN's class).
_OTHER_SPACE = (
    r"[\t\r\x0b\x0c\x1c-\x1f\x00\x85\xa0"
    r"\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)


def _tokenise(texts: pl.Series) -> pl.Series:
    """Each text's whitespace-separated tokens, as `str.split()` gives them."""
    if texts.str.contains(_OTHER_SPACE).any():
        return texts.str.extract_all(_TOKEN)
    # Only " " and "\n": a literal split, ~3x faster than the regex.
    words = texts.str.replace_all("\n", " ", literal=True).str.split(" ")
    return words.list.eval(pl.element().filter(pl.element() != ""))


_EMPTY_CACHE = pl.DataFrame(schema={"token": pl.String, "slot": pl.Int64})


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: type, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += out.nbytes
        return out

    def cstring(self) -> bytes:
        end = self.data.index(b"\0", self.offset)
        value = self.data[self.offset : end]
        self.offset = end + 1
        return value


def _product_quantizer(reader: _Reader) -> tuple[int, int, int, np.ndarray]:
    dim, nsubq, dsub, lastdsub = reader.unpack("iiii")
    return nsubq, dsub, lastdsub, reader.array(np.float32, dim * _KSUB)


def _decode_rows(codes: np.ndarray, pq: tuple, rows: np.ndarray) -> np.ndarray:
    """Dense vectors of quantized `rows` (ProductQuantizer::addcode)."""
    nsubq, dsub, lastdsub, centroids = pq
    parts = []
    for m in range(nsubq):
        code = codes[rows, m].astype(np.int64)
        if m == nsubq - 1:
            base = m * _KSUB * dsub
            index = base + code[:, None] * lastdsub + np.arange(lastdsub)
        else:
            index = (m * _KSUB + code[:, None]) * dsub + np.arange(dsub)
        parts.append(centroids[index])
    return np.concatenate(parts, axis=1)


def _matrix(reader: _Reader, quantized: bool) -> np.ndarray:
    """A whole input or output matrix as dense float32 rows."""
    if not quantized:
        m, n = reader.unpack("qq")
        return reader.array(np.float32, m * n).reshape(m, n)
    qnorm, m, n, codesize = reader.unpack("?qqi")
    codes = reader.array(np.uint8, codesize)
    pq = _product_quantizer(reader)
    codes = codes.reshape(m, pq[0])
    dense = _decode_rows(codes, pq, np.arange(m))
    if qnorm:
        norm_codes = reader.array(np.uint8, m)
        _, _, _, norm_centroids = _product_quantizer(reader)
        dense = dense * norm_centroids[norm_codes][:, None]
    return dense.astype(np.float32)


def _fnv1a(strings: Sequence[bytes]) -> np.ndarray:
    """fastText's 32-bit FNV-1a of each byte string, bytes sign-extended as
    `int8_t` like the C++ (`Dictionary::hash`)."""
    if not strings:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    width = int(lengths.max())
    padded = np.frombuffer(b"".join(s.ljust(width, b"\0") for s in strings), dtype=np.uint8)
    padded = padded.reshape(len(strings), width).astype(np.uint64)
    signed = np.where(padded >= 128, padded | np.uint64(0xFFFFFF00), padded)
    h = np.full(len(strings), _FNV_OFFSET, dtype=np.uint64)
    mask, prime = np.uint64(0xFFFFFFFF), np.uint64(_FNV_PRIME)
    for column in range(width):
        stepped = ((h ^ signed[:, column]) * prime) & mask
        h = np.where(column < lengths, stepped, h)
    return h.astype(np.uint32)


def _char_ngrams(word: bytes, minn: int, maxn: int) -> list[bytes]:
    """The character n-grams of `<word>` that fastText hashes
    (`Dictionary::computeSubwords`): n counts UTF-8 characters, and single
    characters at the edges (`<`, `>`) are left out."""
    size = len(word)
    out = []
    for i in range(size):
        if word[i] & 0xC0 == 0x80:
            continue
        j, n = i, 1
        while j < size and n <= maxn:
            j += 1
            while j < size and word[j] & 0xC0 == 0x80:
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == size)):
                out.append(word[i:j])
            n += 1
    return out


def _ascii_ngram_hashes(
    words: Sequence[bytes], minn: int, maxn: int
) -> tuple[np.ndarray, np.ndarray]:
    """FNV-1a hashes of the n-grams (minn >= 2) of ASCII `<word>`s, computed
    for all of them at once, and the index of the word each belongs to.

    Equal to `_fnv1a(_char_ngrams(word))` for ASCII words (one byte per
    character, no sign extension): the hash of word[i:i+n] extends the hash of
    word[i:i+n-1] by one byte, so n-grams of every length and start position
    are hashed in `maxn` vectorised steps.
    """
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    width = int(lengths.max())
    data = np.frombuffer(b"".join(w.ljust(width, b"\0") for w in words), dtype=np.uint8)
    data = data.reshape(len(words), width).astype(np.uint64)
    h = np.full((len(words), width), _FNV_OFFSET, dtype=np.uint64)
    mask, prime = np.uint64(0xFFFFFFFF), np.uint64(_FNV_PRIME)
    hashes, owners = [], []
    for n in range(1, min(maxn, width) + 1):
        starts = width - n + 1
        # h[:, i] becomes the hash of word[i : i + n].
        h[:, :starts] = ((h[:, :starts] ^ data[:, n - 1 :]) * prime) & mask
        if n >= minn:
            valid = np.arange(starts)[None, :] + n <= lengths[:, None]
            hashes.append(h[:, :starts][valid])
            owners.append(np.nonzero(valid)[0])
    if not hashes:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    return np.concatenate(hashes).astype(np.uint32), np.concatenate(owners)


class FastTextClassifier:
    """A supervised fastText model (e.g. lid.176) that labels lists of texts."""

    def __init__(self, path: Path) -> None:
        reader = _Reader(Path(path).read_bytes())
        magic, version = reader.unpack("ii")
        if magic != _MAGIC or version != 12:
            raise ValueError(f"{path}: not a fastText 0.9 model file")
        (dim, _, _, _, _, word_ngrams, loss, model, bucket, minn, maxn, _, _) = reader.unpack(
            "12id"
        )
        if model != _MODEL_SUPERVISED or loss != _LOSS_HS or word_ngrams != 1 or maxn <= 0:
            raise ValueError(
                f"{path}: only supervised hierarchical-softmax models with character "
                "n-grams and wordNgrams=1 are supported (the shape of lid.176)"
            )
        self.minn, self.maxn, self.bucket = minn, maxn, bucket
        size, nwords, nlabels, _, prune_size = reader.unpack("iiiqq")
        words: list[str] = []
        label_counts: list[int] = []
        for i in range(size):
            words.append(reader.cstring().decode("utf-8", "surrogateescape"))
            count, kind = reader.unpack("qb")
            if (kind == 1) != (i >= nwords):
                raise ValueError(f"{path}: dictionary entries are not words, then labels")
            if kind == 1:
                label_counts.append(count)
        self.word_ids = {w: i for i, w in enumerate(words[:nwords])}
        self.labels = [w.removeprefix(_LABEL_PREFIX) for w in words[nwords:]]
        self.nwords = nwords
        pruned = reader.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2)
        order = np.argsort(pruned[:, 0])
        # prune_size -1: every bucket exists; 0: none does; else a kept-bucket map.
        self.prune_size = prune_size
        self.prune_keys, self.prune_values = pruned[order, 0], pruned[order, 1]
        (quantized,) = reader.unpack("?")
        self.input = _matrix(reader, quantized)
        (quantized_output,) = reader.unpack("?")
        output = _matrix(reader, quantized and quantized_output)
        if self.input.shape[1] != dim or output.shape[0] != nlabels:
            raise ValueError(f"{path}: matrix shapes do not match the model's arguments")
        self.output = output.astype(np.float64)
        # (node, label) incidence of left and right turns on each label's tree path.
        self._left, self._right = _tree_turns(label_counts)
        self._eos_row = self.input[self.word_ids[_EOS]].astype(np.float64)
        self._cache = _EMPTY_CACHE
        self._sums = np.zeros((1024, dim), dtype=np.float32)
        self._counts = np.zeros(1024, dtype=np.int64)

    # -- input layer ----------------------------------------------------------

    def _ngram_rows(self, hashes: np.ndarray) -> np.ndarray:
        """Input rows of hashed n-grams that survive pruning (`pushHash`); -1 if not."""
        buckets = (hashes % np.uint32(self.bucket)).astype(np.int64)
        if self.prune_size < 0:
            return buckets + self.nwords
        if self.prune_size == 0:
            return np.full(len(buckets), -1, dtype=np.int64)
        at = np.searchsorted(self.prune_keys, buckets).clip(max=len(self.prune_keys) - 1)
        found = self.prune_keys[at] == buckets
        return np.where(found, self.prune_values[at].astype(np.int64) + self.nwords, -1)

    def _add_tokens(self, tokens: list[str]) -> None:
        """Compute and cache the input-vector sum and row count of new tokens."""
        encoded = [b"<" + t.encode("utf-8", "surrogatepass") + b">" for t in tokens]
        # A token starting with "__label__" is a label, not input (Dictionary::getLine).
        inputs = [i for i, t in enumerate(tokens) if not t.startswith(_LABEL_PREFIX)]
        ascii_ = [i for i in inputs if encoded[i].isascii()]
        hashes, owners = [], []
        if ascii_:
            h, o = _ascii_ngram_hashes([encoded[i] for i in ascii_], self.minn, self.maxn)
            hashes.append(h)
            owners.append(np.asarray(ascii_, dtype=np.int64)[o])
        other = [i for i in inputs if not encoded[i].isascii()]
        if other:
            grams = [_char_ngrams(encoded[i], self.minn, self.maxn) for i in other]
            hashes.append(_fnv1a([g for gs in grams for g in gs]))
            owners.append(np.repeat(np.asarray(other, dtype=np.int64), list(map(len, grams))))
        words = [(i, self.word_ids[tokens[i]]) for i in inputs if tokens[i] in self.word_ids]
        rows = [self._ngram_rows(np.concatenate(hashes))] if hashes else []
        owner = list(owners)
        if words:
            rows.append(np.array([w for _, w in words], dtype=np.int64))
            owner.append(np.array([i for i, _ in words], dtype=np.int64))
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        who = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
        kept = row >= 0
        who, row = who[kept], row[kept]
        sums = np.zeros((len(tokens), self.input.shape[1]), dtype=np.float32)
        np.add.at(sums, who, self.input[row])
        counts = np.bincount(who, minlength=len(tokens))
        start = self._cache.height
        end = start + len(tokens)
        if end > len(self._sums):
            grow = max(end, 2 * len(self._sums))
            self._sums = np.resize(self._sums, (grow, self._sums.shape[1]))
            self._counts = np.resize(self._counts, grow)
        self._sums[start:end] = sums
        self._counts[start:end] = counts
        added = pl.DataFrame(
            {"token": tokens, "slot": np.arange(start, end)},
            schema=_EMPTY_CACHE.schema,
        )
        self._cache = pl.concat([self._cache, added], rechunk=False)

    def _slots(self, tokens: pl.Series) -> np.ndarray:
        """The cache slot of every token, adding the tokens not cached yet."""
        frame = tokens.to_frame("token")
        unique = frame.unique()
        new = unique.join(self._cache, on="token", how="anti")
        if self._cache.height + new.height > CACHE_TOKENS:
            self._cache, new = _EMPTY_CACHE, unique
        if new.height:
            self._add_tokens(new["token"].sort().to_list())
        if self._cache.n_chunks() > 64:
            self._cache = self._cache.rechunk()
        slots = frame.join(self._cache, on="token", how="left", maintain_order="left")
        return slots["slot"].to_numpy()

    def hidden(self, texts: Sequence[str]) -> np.ndarray:
        """fastText's hidden vector of each text (the mean of the input rows of its
        whitespace-separated tokens, with the end-of-line token a line always
        has), shape (n, dim)."""
        out = np.empty((len(texts), self.input.shape[1]))
        # In chunks: the gathered token sums of a chunk are (tokens, dim) floats.
        for start in range(0, len(texts), HIDDEN_CHUNK):
            chunk = pl.Series(list(texts[start : start + HIDDEN_CHUNK]), dtype=pl.String)
            tokens = _tokenise(chunk)
            lengths = tokens.list.len().to_numpy().astype(np.int64)
            slots = self._slots(tokens.explode(empty_as_null=False))
            owner = np.repeat(np.arange(len(chunk)), lengths)
            sums = np.tile(self._eos_row, (len(chunk), 1))
            counts = 1 + np.bincount(owner, self._counts[slots], minlength=len(chunk))
            nonempty = lengths > 0
            if nonempty.any():
                starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
                sums[nonempty] += np.add.reduceat(self._sums[slots], starts, axis=0)
            out[start : start + len(chunk)] = sums / counts[:, None]
        return out

    # -- output layer ---------------------------------------------------------

    def predict(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """The most probable label of each text and its probability, as fastText's
        `predict(" ".join(text.split()), k=1)` gives them."""
        if not texts:
            return [], np.zeros(0)
        scores = self.log_scores(self.hidden(texts))
        best = scores.argmax(axis=1)
        return [self.labels[i] for i in best], np.exp(scores[np.arange(len(best)), best])

    def log_scores(self, hidden: np.ndarray) -> np.ndarray:
        """Each label's score: the sum of `log(p + 1e-5)` along its tree path
        (HierarchicalSoftmaxLoss::dfs), shape (n, labels)."""
        sigmoid = 1.0 / (1.0 + np.exp(-(hidden @ self.output.T)))
        return np.log(1.0 - sigmoid + 1e-5) @ self._left + np.log(sigmoid + 1e-5) @ self._right


def _tree_turns(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Which internal nodes each label's path turns left and right at, in
    fastText's Huffman tree (`HierarchicalSoftmaxLoss::buildTree`): two
    (nodes, labels) 0/1 matrices (the node index is the output-matrix row)."""
    size = len(counts)
    count = [*counts, *([10**15] * (size - 1))]
    parent = [-1] * (2 * size - 1)
    right = [False] * (2 * size - 1)
    leaf, node = size - 1, size
    for i in range(size, 2 * size - 1):
        chosen = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                chosen.append(leaf)
                leaf -= 1
            else:
                chosen.append(node)
                node += 1
        count[i] = count[chosen[0]] + count[chosen[1]]
        parent[chosen[0]] = parent[chosen[1]] = i
        right[chosen[1]] = True
    turns = np.zeros((2, size, size))
    for label in range(size):
        j = label
        while parent[j] != -1:
            turns[int(right[j]), parent[j] - size, label] = 1.0
            j = parent[j]
    return turns[0], turns[1]
