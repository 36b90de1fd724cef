"""Build small SageMaker scikit-learn model artifacts for tests (shared by several test modules)."""
from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

# Two features; the label is 1 when their sum is large.
TRAIN_FEATURES = np.array([[0.0, 0.0], [0.5, 1.0], [1.0, 0.5], [1.0, 1.0],
                           [3.0, 2.5], [2.5, 3.0], [3.0, 3.0], [4.0, 3.5]])
TRAIN_LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def train_model() -> LogisticRegression:
    """The tiny classifier every artifact holds; deterministic."""
    return LogisticRegression().fit(TRAIN_FEATURES, TRAIN_LABELS)


def build_model_tar(path: Path, inference_py: str | None = None, *, model_file: str = "model.joblib",
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write `path` (a model.tar.gz): the trained model, plus code/inference.py when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    joblib.dump(train_model(), model_bytes)
    files = {model_file: model_bytes.getvalue()}
    if inference_py is not None:
        files["code/inference.py"] = textwrap.dedent(inference_py).encode()
    for name, text in (extra_files or {}).items():
        files[name] = text.encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
