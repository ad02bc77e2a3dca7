"""BRISQUE (Mittal, Moorthy, Bovik 2012): no-reference image quality from natural scene statistics.

The `brisque` 0.2.0 wheel ships a trained epsilon-SVR (`svm.txt`, RBF kernel) and the feature
min/max used to scale its inputs (`normalize.pickle`), but its `score()` fails on numpy 2.x
(object arrays passed into scipy). We compute the same 36 features here and evaluate the SVR in
numpy, reusing those two shipped files (model store name `brisque-svm`).

Features, at the image and at half size: the MSCN coefficients (local mean/contrast
normalised luma, 7x7 Gaussian, sigma 7/6, C = 1/255, zero-padded as the wheel's convolve2d is)
fitted with a generalised Gaussian (shape, variance), and their four neighbour products
(horizontal, vertical, both diagonals) fitted with an asymmetric generalised Gaussian (shape,
mean, left and right variance). Scale: roughly 0 (pristine) to 100+ (heavily distorted);
lower is better.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from scipy import ndimage, special

_ALPHAS = np.arange(0.2, 10.0, 0.001)
_PHI = special.gamma(2 / _ALPHAS) ** 2 / (special.gamma(1 / _ALPHAS) * special.gamma(3 / _ALPHAS))


def _gauss1d(n: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    x = np.arange(n) - n // 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()  # the 2-D kernel outer(g, g) is the wheel's normalised 7x7 kernel


def _blur(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = ndimage.correlate1d(img, g, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(out, g, axis=1, mode="constant", cval=0.0)


def mscn(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a [0, 1] luma image."""
    g = _gauss1d()
    mu = _blur(gray, g)
    sigma = np.sqrt(np.abs(mu ** 2 - _blur(gray ** 2, g)))
    return (gray - mu) / (sigma + 1 / 255)


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian: (shape alpha, mean, sigma_left, sigma_right)."""
    x = x.ravel()
    left, right = x[x < 0], x[x >= 0]
    sl = np.sqrt(np.mean(left ** 2)) if left.size else 0.0
    sr = np.sqrt(np.mean(right ** 2)) if right.size else 0.0
    ms = np.mean(x ** 2)
    if ms <= 0 or sr <= 0:
        return 0.2, 0.0, float(sl), float(sr)
    gamma = sl / sr
    r_hat = np.mean(np.abs(x)) ** 2 / ms
    big_r = r_hat * (gamma ** 3 + 1) * (gamma + 1) / (gamma ** 2 + 1) ** 2
    alpha = float(_ALPHAS[np.argmin((_PHI - big_r) ** 2)])
    const = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = (sr - sl) * const * (special.gamma(2 / alpha) / special.gamma(1 / alpha))
    return alpha, float(mean), float(sl), float(sr)


def scale_features(gray: np.ndarray) -> list[float]:
    m = mscn(gray)
    alpha, _, sl, sr = aggd_fit(m)
    feats = [alpha, (sl ** 2 + sr ** 2) / 2]
    for p in (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:]):
        a, mean, sl, sr = aggd_fit(p)
        feats += [a, mean, sl ** 2, sr ** 2]
    return feats


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2gray's weights (the wheel's), as float64 in [0, 1]."""
    x = rgb.astype(np.float64) / 255.0
    return x[..., 0] * 0.2125 + x[..., 1] * 0.7154 + x[..., 2] * 0.0721


def _half(gray: np.ndarray) -> np.ndarray:
    try:
        import cv2

        return cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    except ImportError:  # Pillow's bicubic is close enough where OpenCV is absent
        from PIL import Image

        h, w = gray.shape
        return np.asarray(Image.fromarray(gray.astype(np.float32), "F").resize((max(1, round(w / 2)), max(1, round(h / 2))), Image.BICUBIC), dtype=np.float64)


def features(rgb: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of an RGB uint8 image (18 at full, 18 at half size)."""
    gray = to_gray(rgb)
    return np.array(scale_features(gray) + scale_features(_half(gray)), dtype=np.float64)


class Brisque:
    """The wheel's SVR over our features: `score(rgb)` -> BRISQUE (lower is better)."""

    def __init__(self, model_dir: Path | str):
        d = Path(model_dir)
        with open(d / "normalize.pickle", "rb") as f:
            norm = pickle.load(f)
        self.lo = np.array(norm["min_"], dtype=np.float64)
        self.hi = np.array(norm["max_"], dtype=np.float64)
        self._load_svm(d / "svm.txt")

    def _load_svm(self, path: Path) -> None:
        header, coefs, svs = {}, [], []
        with open(path) as f:
            for line in f:
                if line.strip() == "SV":
                    break
                k, _, v = line.strip().partition(" ")
                header[k] = v
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                coefs.append(float(parts[0]))
                row = np.zeros(len(self.lo))
                for kv in parts[1:]:
                    i, v = kv.split(":")
                    row[int(i) - 1] = float(v)
                svs.append(row)
        assert header.get("svm_type") == "epsilon_svr" and header.get("kernel_type") == "rbf", header
        self.gamma = float(header["gamma"])
        self.rho = float(header["rho"].split()[0])
        self.coef = np.array(coefs)
        self.sv = np.stack(svs)
        self.sv_sq = (self.sv ** 2).sum(axis=1)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """(N, 36) raw features -> (N,) scores."""
        x = -1 + 2.0 * (np.atleast_2d(feats) - self.lo) / (self.hi - self.lo)
        d2 = (x ** 2).sum(axis=1)[:, None] + self.sv_sq[None, :] - 2 * x @ self.sv.T
        return np.exp(-self.gamma * np.maximum(d2, 0)) @ self.coef - self.rho

    def score(self, rgb: np.ndarray) -> float:
        return float(self.predict(features(rgb))[0])
