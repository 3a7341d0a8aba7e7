"""HAT's predictor as a baseline: an MLP regressor (hidden 400-400-400, ReLU, Adam, MSE).

torch is imported inside ``fit`` only. Prediction runs in numpy from the saved weights, so a
loaded MLP needs no torch and gives bit-identical scores to the one that was saved.

Inputs: each feature is standardised with the training mean and standard deviation (NaN
ignored; a constant column gets std 1); a missing value (NaN, e.g. a layer the subnet does not
have) then becomes 0, the training mean, and for every column that had a NaN in training a 0/1
"missing" indicator column is appended, so the network can tell "absent" from "average". The
target is standardised too and the prediction mapped back to y's units.

Differences from HAT's settings (lr 1e-5, 5,000 steps): lr 1e-3 and 2,000 full-batch steps,
float32; a few hundred rows train in seconds on a CPU; seeded (torch's global RNG is left
untouched). The numpy prediction uses the float32 weights in float64 arithmetic. One torch thread
by default (``num_threads=1``; None = torch's default): fastest for a few hundred rows.
"""
from __future__ import annotations

import io
from typing import Any, Optional, Sequence

import numpy as np

from fairseq_nas.ranking.base import Ranker

__all__ = ["MLPRegressor"]


class MLPRegressor(Ranker):
    """MLP regression on y; scores are the predicted y (higher = better)."""

    model_suffix = ".npz"

    def __init__(
        self,
        hidden: Sequence[int] = (400, 400, 400),
        lr: float = 1e-3,
        steps: int = 2000,
        weight_decay: float = 0.0,
        seed: int = 0,
        num_threads: Optional[int] = 1,
    ):
        self.hidden = tuple(int(h) for h in hidden)
        self.lr = lr
        self.steps = steps
        self.weight_decay = weight_decay
        self.seed = seed
        self.num_threads = num_threads
        self.params_: Optional[dict[str, np.ndarray]] = None

    # preprocessing ------------------------------------------------------------------------------
    def _transform(self, X: np.ndarray) -> np.ndarray:
        p = self.params_
        assert p is not None
        Z = (X - p["x_mean"]) / p["x_std"]
        miss = np.isnan(Z)
        Z[miss] = 0.0
        ind = p["indicator_cols"].astype(np.intp)
        if ind.size:
            Z = np.concatenate([Z, miss[:, ind].astype(np.float64)], axis=1)
        return Z

    def _fit(self, X: np.ndarray, y: np.ndarray, init_model: Optional[Ranker]) -> None:
        import torch  # lazy: fairseq_nas.ranking must not import torch at module level

        if init_model is not None:
            if not isinstance(init_model, MLPRegressor) or init_model.params_ is None:
                raise TypeError(f"init_model: an MLPRegressor continues only from a fitted MLPRegressor, "
                                f"got {type(init_model).__name__}")
            if tuple(init_model.hidden) != self.hidden:
                raise ValueError(f"init_model: hidden sizes {init_model.hidden} differ from {self.hidden}")
            # keep the init model's input/target scaling so its weights stay meaningful
            self.params_ = {k: v.copy() for k, v in init_model.params_.items()}
        else:
            with np.errstate(all="ignore"):
                mean = np.nanmean(np.where(np.isnan(X).all(0), 0.0, X), axis=0)
                std = np.nanstd(X, axis=0)
            mean = np.nan_to_num(mean, nan=0.0)
            std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
            ystd = float(y.std()) or 1.0
            self.params_ = {
                "x_mean": mean,
                "x_std": std,
                "indicator_cols": np.flatnonzero(np.isnan(X).any(axis=0)).astype(np.int64),
                "y_mean": np.array(float(y.mean())),
                "y_std": np.array(ystd),
            }
        Z = self._transform(X)
        t = (y - float(self.params_["y_mean"])) / float(self.params_["y_std"])

        sizes = [Z.shape[1], *self.hidden, 1]
        old_threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                layers: list[Any] = []
                for i in range(len(sizes) - 1):
                    layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
                    if i < len(sizes) - 2:
                        layers.append(torch.nn.ReLU())
                net = torch.nn.Sequential(*layers)
            if init_model is not None:
                with torch.no_grad():
                    for k, lin in enumerate(m for m in net if isinstance(m, torch.nn.Linear)):
                        W, b = self.params_[f"W{k}"], self.params_[f"b{k}"]
                        if W.shape != tuple(lin.weight.shape[::-1]):
                            raise ValueError("init_model: was fit on a different feature layout "
                                             f"(weight {W.shape} vs {tuple(lin.weight.shape[::-1])})")
                        lin.weight.copy_(torch.from_numpy(W.T.astype(np.float32)))
                        lin.bias.copy_(torch.from_numpy(b.astype(np.float32)))
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            Zt = torch.from_numpy(Z.astype(np.float32))
            tt = torch.from_numpy(t.astype(np.float32)).reshape(-1, 1)
            loss = None
            for _ in range(int(self.steps)):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(net(Zt), tt)
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(old_threads)
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        for k, lin in enumerate(linears):
            self.params_[f"W{k}"] = lin.weight.detach().numpy().T.copy()
            self.params_[f"b{k}"] = lin.bias.detach().numpy().copy()
        self.info_.update({"steps": int(self.steps),
                           "train_mse": None if loss is None else float(loss.item()),
                           "warm_start": init_model is not None})

    def _predict(self, X: np.ndarray) -> np.ndarray:
        p = self.params_
        assert p is not None
        h = self._transform(X)
        n_layers = len(self.hidden) + 1
        for k in range(n_layers):
            h = h @ p[f"W{k}"] + p[f"b{k}"]
            if k < n_layers - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0] * float(p["y_std"]) + float(p["y_mean"])

    def _model_bytes(self) -> bytes:
        assert self.params_ is not None
        buf = io.BytesIO()
        np.savez(buf, **self.params_)
        return buf.getvalue()

    def _load_model(self, data: bytes) -> None:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            self.params_ = {k: z[k] for k in z.files}
