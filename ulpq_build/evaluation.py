"""Real data and the measures of accuracy on it: what `bench` reports (each architecture's row
scores its model with them: architectures/bert.py LeeSimilarity, vit.py FashionMnistTop1). All
data comes from installed packages (environment.md):

    text   the Lee corpus (gensim's test data): 50 documents and 1225 human similarity scores;
           metric: Pearson correlation of embedding cosines with the scores, and mean cosine of each
           document's embedding to its float32 embedding. Calibration never reads this corpus:
           it uses the text shipped in ulpq_build/data/ (calibration.py).
    image  Fashion-MNIST (Debian's dataset-fashion-mnist): top-1 on the 10000 test images;
           calibration: training images.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build.errors import UserError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _gensim_data() -> Path:
    spec = importlib.util.find_spec("gensim")  # locates the package without importing it (it needs scipy)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the Lee corpus ships in the gensim wheel: `pip install --no-deps gensim` (only its data is read)")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


def lee_corpus() -> tuple[list[str], np.ndarray]:
    """The 50 Lee documents and the 50x50 matrix of averaged human similarity scores."""
    folder = _gensim_data()
    docs = (folder / "lee.cor").read_text(encoding="latin-1").splitlines()
    return docs, np.loadtxt(folder / "similarities0-1.txt")


def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 28, 28], labels [N]) of 'train' or 't10k'."""
    try:
        images = gzip.open(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz").read()
        labels = gzip.open(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz").read()
    except FileNotFoundError:
        raise UserError(f"Fashion-MNIST is not installed at {FASHION_MNIST}: `apt-get install dataset-fashion-mnist`") from None
    return np.frombuffer(images, np.uint8, offset=16).reshape(-1, 28, 28), np.frombuffer(labels, np.uint8, offset=8)


@dataclass
class TextBatch:
    ids: np.ndarray  # [docs, seq] padded
    mask: np.ndarray  # [docs, seq] 1 token / 0 pad

    def trimmed(self) -> TextBatch:
        """Without the columns that are padding in every row (the longest text sets the width)."""
        width = int(self.mask.sum(axis=1).max())
        return TextBatch(self.ids[:, :width], self.mask[:, :width])


def load_tokenizer(tokenizer_file: Path):
    """The `tokenizers` Tokenizer of a tokenizer.json; a file it cannot read is one UserError line."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UserError("text evaluation needs the `tokenizers` package: `pip install tokenizers`") from None
    try:
        return Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # the Rust side raises plain Exception with serde's message
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{tokenizer_file}: the tokenizers package cannot read it ({reason}); fix the file, or quantize "
                        f"without calibration (--method rtn)") from None


def tokenize(tokenizer_file: Path, texts: list[str], max_length: int) -> TextBatch:
    """Token ids as the runtime's tokenizer makes them (the `tokenizers` package: the reference the JS one is tested against)."""
    tokenizer = load_tokenizer(tokenizer_file)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    encoded = [e.ids for e in tokenizer.encode_batch(texts)]
    ids = np.zeros((len(encoded), max(map(len, encoded))), np.int64)
    mask = np.zeros(ids.shape, np.float64)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
        mask[i, : len(e)] = 1
    return TextBatch(ids, mask)


def pearson_with_scores(embeddings: np.ndarray, human: np.ndarray) -> float:
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    upper = np.triu_indices(len(human), 1)
    return float(np.corrcoef((e @ e.T)[upper], human[upper])[0, 1])


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())


def grey_to_pixels(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 grey images [N, H, W] -> model input, the same numbers vit_preprocess gives for grey RGBA."""
    x = np.repeat(images.astype(np.float64)[:, None] * spec["rescale"], spec["channels"], axis=1)
    return (x - np.asarray(spec["mean"])[:, None, None]) / np.asarray(spec["std"])[:, None, None]
