"""The ranker interface and its on-disk format.

A ranker scores one architecture at a time (s = r(a)), so ranking N candidates costs N
predictions and the order it induces is transitive by construction.

On disk a ranker is two files: the model in its own format (LightGBM's text format for the
GBDT rankers, a numpy ``.npz`` for the MLP) and a small JSON with the class, the
hyper-parameters, the feature names and training facts. ``save(path)`` takes either a directory
(files ``ranker.json`` + ``model.txt``/``model.npz`` inside it) or a path ending in ``.json``
(the model goes beside it with the same stem). Each file is written to a temporary name and
renamed into place; the JSON is written last.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from fairseq_nas.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["Ranker", "load_ranker", "check_X", "check_y", "atomic_write_bytes", "atomic_write_text"]

FORMAT = "fairseq-nas-ranker"
FORMAT_VERSION = 1
META_NAME = "ranker.json"

PathLike = Union[str, "os.PathLike[str]"]

#: class name -> class, filled by ``Ranker.__init_subclass__`` (used by :func:`load_ranker`).
_REGISTRY: dict[str, type] = {}


def check_X(X: Any, n_features: Optional[int] = None, what: str = "X") -> np.ndarray:
    """A 2-D float64 copy-free view of ``X``; NaN allowed (a missing value), +-inf not."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if n_features is not None and arr.size == n_features else arr
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D feature matrix (rows x features), got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{what}: contains +-inf; use NaN for a missing value")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{what}: has {arr.shape[1]} feature columns, the ranker was fit on {n_features}")
    return arr


def check_y(y: Any, n_rows: int) -> np.ndarray:
    """A 1-D float64 label vector of length ``n_rows``; every label finite."""
    arr = np.asarray(y, dtype=np.float64).ravel()
    if arr.size != n_rows:
        raise ValueError(f"y: has {arr.size} labels for {n_rows} rows of X")
    if not np.isfinite(arr).all():
        raise ValueError("y: labels must be finite (larger is better)")
    return arr


def _meta_and_model_paths(path: PathLike, model_suffix: Optional[str]) -> tuple[Path, Optional[Path]]:
    p = Path(path)
    if p.suffix == ".json":
        meta = p
        model = p.with_suffix(model_suffix) if model_suffix else None
    else:
        meta = p / META_NAME
        model = p / f"model{model_suffix}" if model_suffix else None
    return meta, model


class Ranker:
    """Base class: ``fit(X, y)`` (larger y better), ``predict(X)`` (higher score better), save/load.

    Subclasses set ``model_suffix`` and implement ``_fit``, ``_predict``, ``_model_bytes`` and
    ``_load_model``. Hyper-parameters are the ``__init__`` keyword arguments (``get_params``).
    """

    model_suffix = ".bin"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    # -- hyper-parameters -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` keyword arguments of this ranker (scikit-learn style)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k, p in sig.parameters.items()
                if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def clone(self, **overrides: Any) -> Ranker:
        """An unfitted ranker with the same hyper-parameters (``overrides`` replace some)."""
        params = self.get_params()
        params.update(overrides)
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / predict ----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "n_features_in_", None) is not None

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        feature_names: Optional[Sequence[str]] = None,
        init_model: Optional[Ranker] = None,
    ) -> Ranker:
        """Fit on feature matrix ``X`` (rows = architectures, NaN = missing) and labels ``y`` (larger better).

        ``init_model``: warm start, continue from a ranker already fit (e.g. on cheap supernet
        labels) instead of starting from scratch. Returns ``self``.
        """
        Xa = check_X(X)
        ya = check_y(y, Xa.shape[0])
        if Xa.shape[0] < 2:
            raise ValueError(f"{type(self).__name__}.fit: need at least 2 rows, got {Xa.shape[0]}")
        if feature_names is None:
            if init_model is not None and init_model.is_fitted:
                feature_names = init_model.feature_names_
            else:
                feature_names = [f"f{i}" for i in range(Xa.shape[1])]
        feature_names = [str(f) for f in feature_names]
        if len(feature_names) != Xa.shape[1]:
            raise ValueError(f"feature_names: {len(feature_names)} names for {Xa.shape[1]} columns")
        if init_model is not None:
            if not init_model.is_fitted:
                raise ValueError("init_model: the ranker to continue from is not fitted")
            if init_model.n_features_in_ != Xa.shape[1]:
                raise ValueError(f"init_model: was fit on {init_model.n_features_in_} features, "
                                 f"X has {Xa.shape[1]}")
        self.info_: dict[str, Any] = {"n_rows": int(Xa.shape[0])}
        self.feature_names_ = list(feature_names)  # before _fit: it may read which columns are categorical
        self._fit(Xa, ya, init_model)
        self.n_features_in_ = int(Xa.shape[1])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Scores, one per row of ``X``; higher = better. Depends on the row alone."""
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__}.predict: call fit() or load() first")
        Xa = check_X(X, self.n_features_in_)
        return np.asarray(self._predict(Xa), dtype=np.float64).ravel()

    def _fit(self, X: np.ndarray, y: np.ndarray, init_model: Optional[Ranker]) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- persistence ------------------------------------------------------------------------------
    def _model_bytes(self) -> bytes:
        raise NotImplementedError

    def _load_model(self, data: bytes) -> None:
        raise NotImplementedError

    def save(self, path: PathLike) -> Path:
        """Write the model file and the JSON metadata (atomically); returns the JSON's path."""
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__}.save: nothing to save, the ranker is not fitted")
        meta_path, model_path = _meta_and_model_paths(path, self.model_suffix)
        assert model_path is not None
        atomic_write_bytes(model_path, self._model_bytes())
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": self.get_params(),
            "feature_names": self.feature_names_,
            "n_features": self.n_features_in_,
            "model_file": model_path.name,
            "info": getattr(self, "info_", {}),
        }
        atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
        return meta_path

    @classmethod
    def load(cls, path: PathLike) -> Ranker:
        """Load a ranker written by :meth:`save` (a directory or the ``.json`` path)."""
        meta_path, _ = _meta_and_model_paths(path, None)
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: no ranker metadata here "
                                    f"(expected {META_NAME} or a .json path)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format: expected {FORMAT!r}")
        name = meta.get("class")
        klass = _REGISTRY.get(str(name))
        if klass is None:
            raise ValueError(f"{meta_path}: class: unknown ranker {name!r}; "
                             f"valid: {', '.join(sorted(_REGISTRY))}")
        if cls is not Ranker and not issubclass(klass, cls):
            raise ValueError(f"{meta_path}: class: holds a {name}, not a {cls.__name__}")
        obj = klass(**meta.get("params", {}))
        obj._load_model((meta_path.parent / meta["model_file"]).read_bytes())
        obj.n_features_in_ = int(meta["n_features"])
        obj.feature_names_ = list(meta["feature_names"])
        obj.info_ = dict(meta.get("info", {}))
        return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_ranker(path: PathLike) -> Ranker:
    """Load any ranker saved with ``save`` (the class is read from the JSON)."""
    return Ranker.load(path)
