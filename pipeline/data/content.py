"""Content checks for the data gate: what a well-formed file with the WRONG content gets wrong.

The format checks (validate.py) catch a broken file. These catch a file that is well-formed but holds the
wrong images: exact duplicates within a split, test images leaked from the training set (identical or
near-identical), blank/constant/saturated images, and drift from a reference profile of the official
dataset (inverted, mirrored, rotated, transposed or shifted images, rescaled intensity, added noise, permuted
or unrelated labels, another 28x28 dataset in the same layout). Everything here is numpy/scipy on uint8 arrays
(pure: arrays in, numbers out); validate.py turns the per-image and per-class results into frames that its Great
Expectations suite judges, so every check shows in the report and the Data Docs.

Methods (the thresholds live in params.yaml `validate`):
- exact duplicates: a 64-bit hash of each image's 784 pixel bytes; rows with equal hashes are compared byte
  for byte, so a hash collision never counts as a duplicate.
- near-duplicates: the nearest training image of every test image by RMS pixel difference on the 0..1 scale,
  sqrt(mean((a - b)^2)). Candidates come from a 48-component PCA projection (a projection onto orthonormal
  axes never lengthens a distance, so no pair within the threshold is missed) and are confirmed on all 784
  pixels.
- degenerate images: blank (every pixel 0), constant (one value), saturated (more than half the pixels 255).
- drift, per class, against the reference profile (`python -m pipeline profile` rebuilds it from the official
  files): Jensen-Shannon distance (base 2, 0..1) of the pixel-value histogram, RMS difference of the mean image,
  and the population stability index of the per-image mean intensity over the reference's deciles.
- diagnosis of a drifted split (`diagnose`), on all classes at once: each cause is a model predicting the
  pooled pixel histogram and the class mean images from the profile; one is named only when it fits clearly
  (constants below, internal to the diagnosis), else "cause unknown".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.schema import CLASS_NAMES, IMAGE_SIDE, PIXEL_COLUMNS

HIST_BINS = 16                # pixel-value histogram: 16 bins of 16 grey levels
INTENSITY_BINS = 10           # per-image mean intensity: the reference's deciles
PCA_COMPONENTS = 48
SATURATED_SHARE = 0.5         # an image with more than half its pixels at 255 is "saturated"
PROFILE_VERSION = 1


# ------------------------------------------------------------------------------------- duplicates
def row_hashes(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash per image (N, 784) uint8: its bytes as 98 uint64 words, mixed with fixed odd multipliers."""
    x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.uint8)
    words = x.view(np.uint64)                                   # 784 bytes = 98 words per row
    mult = (np.random.default_rng(20171025).integers(1, 2**63, size=words.shape[1], dtype=np.uint64) << 1) | 1
    with np.errstate(over="ignore"):
        h = (words * mult).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h


def duplicate_of(x: np.ndarray) -> np.ndarray:
    """For each row, the index of the first EARLIER row with identical pixels, else -1."""
    x = x.reshape(len(x), -1)
    h = row_hashes(x)
    order = np.argsort(h, kind="stable")          # equal hashes adjacent, earlier rows first
    result = np.full(len(x), -1, dtype=np.int64)
    same = np.flatnonzero(h[order][1:] == h[order][:-1]) + 1
    for pos in same:                              # rare: verify byte for byte, walking back the run of equal hashes
        row = order[pos]
        back = pos - 1
        while back >= 0 and h[order[back]] == h[row]:
            if np.array_equal(x[order[back]], x[row]):
                first = order[back]
                result[row] = first if result[first] < 0 else result[first]
            back -= 1
    return result


def found_in(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each query row, the index of a reference row with identical pixels, else -1."""
    q, r = query.reshape(len(query), -1), reference.reshape(len(reference), -1)
    hq, hr = row_hashes(q), row_hashes(r)
    order = np.argsort(hr)
    pos = np.clip(np.searchsorted(hr[order], hq), 0, max(len(r) - 1, 0))
    result = np.full(len(q), -1, dtype=np.int64)
    if not len(r):
        return result
    for i in np.flatnonzero(hr[order][pos] == hq):
        j = pos[i]
        while j < len(r) and hr[order[j]] == hq[i]:
            if np.array_equal(q[i], r[order[j]]):
                result[i] = order[j]
                break
            j += 1
    return result


def nearest_within(query: np.ndarray, reference: np.ndarray, max_rms: float,
                   chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(nearest reference index or -1, its RMS pixel difference or NaN) for every query image whose nearest
    reference image lies within `max_rms` (0..1 scale); exact on all pixels, see the module docstring."""
    q, r = _unit_float(query), _unit_float(reference)
    index = np.full(len(q), -1, dtype=np.int64)
    rms = np.full(len(q), np.nan, dtype=np.float64)
    if not len(q) or not len(r):
        return index, rms
    mean = r.mean(axis=0)
    sample = r[np.random.default_rng(0).choice(len(r), min(len(r), 2000), replace=False)] - mean
    components = np.linalg.svd(sample, full_matrices=False)[2][:PCA_COMPONENTS].T      # (784, k), orthonormal
    rp, qp = (r - mean) @ components, (q - mean) @ components
    limit_sq = (max_rms ** 2) * q.shape[1] + 1e-4                 # squared L2 distance for RMS = max_rms
    radius = float(np.sqrt(limit_sq))
    # Sorting both sides by the first component bounds the search: |pc1(q) - pc1(r)| <= |q - r|, so a chunk of
    # queries only needs the reference images whose pc1 lies within `radius` of the chunk's pc1 range.
    r_order, q_order = np.argsort(rp[:, 0], kind="stable"), np.argsort(qp[:, 0], kind="stable")
    rp, r_pc1 = rp[r_order], rp[r_order, 0]
    # |q - r|^2 = |q|^2 + |r|^2 - 2 q.r. One matrix product gives |r|^2 - 2 q.r for a whole block at once
    # ([q, 1] . [-2 r, |r|^2]); it is compared with limit - |q|^2 per row. Memory-bound: few passes, row
    # minima first, because most test images have no candidate at all.
    ref_aug = np.ascontiguousarray(np.vstack([-2.0 * rp.T, (rp * rp).sum(axis=1)[None, :]]), dtype=np.float32)
    qp = qp[q_order]
    q_aug = np.hstack([qp, np.ones((len(qp), 1), dtype=np.float32)])
    thresholds = (limit_sq - (qp * qp).sum(axis=1)).astype(np.float32)
    for start in range(0, len(q), chunk):
        stop = min(start + chunk, len(q))
        lo = int(np.searchsorted(r_pc1, qp[start, 0] - radius, side="left"))
        hi = int(np.searchsorted(r_pc1, qp[stop - 1, 0] + radius, side="right"))
        if hi <= lo:
            continue
        scores = q_aug[start:stop] @ ref_aug[:, lo:hi]
        limits = thresholds[start:stop]
        near_rows = np.flatnonzero(scores.min(axis=1) <= limits)
        if not len(near_rows):
            continue
        rows, cols = np.nonzero(scores[near_rows] <= limits[near_rows, None])
        rows, cols = q_order[near_rows[rows] + start], r_order[cols + lo]
        full = ((q[rows] - r[cols]) ** 2).mean(axis=1)          # confirm on every pixel
        keep = full <= max_rms ** 2
        rows, cols, full = rows[keep], cols[keep], full[keep]
        for i in np.argsort(-full):                                    # nearest last, so it wins
            index[rows[i]], rms[rows[i]] = cols[i], float(np.sqrt(full[i]))
    return index, rms


def _unit_float(x: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 rows on the 0..1 scale, in one conversion and one in-place scaling."""
    out = x.reshape(len(x), -1).astype(np.float32)
    out *= np.float32(1 / 255)
    return out


# ------------------------------------------------------------------------------- per-image sanity
def degenerate_kind(x: np.ndarray) -> np.ndarray:
    """Per image: "blank" (all 0), "constant" (one value), "saturated" (> half the pixels 255) or ""."""
    x = x.reshape(len(x), -1)
    lo, hi = x.min(axis=1), x.max(axis=1)
    saturated = (x == 255).mean(axis=1) > SATURATED_SHARE
    kind = np.full(len(x), "", dtype=object)
    kind[saturated] = "saturated"
    kind[lo == hi] = "constant"
    kind[hi == 0] = "blank"
    return kind


# ---------------------------------------------------------------------------------------- profile
def _pixel_histogram(xc: np.ndarray) -> np.ndarray:
    hist = np.bincount((xc // (256 // HIST_BINS)).ravel(), minlength=HIST_BINS).astype(np.float64)
    return hist / hist.sum()


def build_profile(x: np.ndarray, y: np.ndarray, source: str) -> dict[str, Any]:
    """The reference profile of a labelled image set (the official train + test images): per class, its
    share, pixel-value histogram, mean image and the deciles of the per-image mean intensity."""
    x = x.reshape(len(x), -1)
    classes = {}
    for c, name in enumerate(CLASS_NAMES):
        xc = x[y == c]
        if not len(xc):
            raise PipelineError(f"cannot profile: class {c} ('{name}') has no images")
        intensity = xc.mean(axis=1) / 255.0
        classes[name] = {
            "count": int(len(xc)),
            "share": round(len(xc) / len(x), 6),
            "pixel_histogram": [round(float(v), 6) for v in _pixel_histogram(xc)],
            "intensity_deciles": [round(float(v), 6) for v in
                                  np.quantile(intensity, np.linspace(0, 1, INTENSITY_BINS + 1)[1:-1])],
            "mean_image": [round(float(v), 4) for v in xc.mean(axis=0) / 255.0],
        }
    return {"version": PROFILE_VERSION, "source": source, "images": int(len(x)), "hist_bins": HIST_BINS,
            "classes": classes}


def load_profile(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: reference profile not found",
                            hint="rebuild it from the official files: python -m pipeline profile "
                                 "--source /usr/share/datasets/fashion-mnist --out " + str(path))
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PipelineError(f"{path}: not a valid reference profile ({exc})",
                            hint="rebuild it with `python -m pipeline profile`") from None
    if profile.get("version") != PROFILE_VERSION or set(profile.get("classes", {})) != set(CLASS_NAMES):
        raise PipelineError(f"{path}: reference profile of another version or class set",
                            hint="rebuild it with `python -m pipeline profile`")
    return profile


# ------------------------------------------------------------------------------------------ drift
def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def psi(observed: np.ndarray, expected: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index sum((o - e) * ln(o / e)) over bins (shares floored to avoid log 0)."""
    o, e = np.clip(observed, floor, None), np.clip(expected, floor, None)
    return float(np.sum((o - e) * np.log(o / e)))


def drift(x: np.ndarray, y: np.ndarray, profile: dict[str, Any], min_class_rows: int,
          looks_like: list[str] | None = None) -> list[dict[str, Any]]:
    """Per class: rows, pixel_js, mean_image_rmse, intensity_psi against the reference (None for a class with
    fewer than `min_class_rows` rows: too few to judge), and `looks_like`: the class's part of the split's
    diagnosis (`diagnose(...)["looks_like"]`), "" where none."""
    from scipy.spatial.distance import jensenshannon

    x = x.reshape(len(x), -1)
    ref_means = {name: np.asarray(c["mean_image"]) for name, c in profile["classes"].items()}
    rows = []
    for c, name in enumerate(CLASS_NAMES):
        ref = profile["classes"][name]
        xc = x[y == c]
        entry: dict[str, Any] = {"class": c, "name": name, "rows": int(len(xc)), "pixel_js": None,
                                 "mean_image_rmse": None, "intensity_psi": None, "looks_like": ""}
        if len(xc) >= max(min_class_rows, 1):
            mean = xc.mean(axis=0) / 255.0
            edges = np.asarray(ref["intensity_deciles"])
            bins = np.bincount(np.searchsorted(edges, xc.mean(axis=1) / 255.0), minlength=INTENSITY_BINS)
            entry.update({
                "pixel_js": float(jensenshannon(_pixel_histogram(xc), ref["pixel_histogram"], base=2)),
                "mean_image_rmse": _rms(mean, ref_means[name]),
                "intensity_psi": psi(bins / len(xc), np.full(INTENSITY_BINS, 1 / INTENSITY_BINS)),
                "looks_like": looks_like[c] if looks_like else "",
            })
        rows.append(entry)
    return rows


# -------------------------------------------------------------------------------------- diagnosis
# What happened to a drifted split, judged on all its classes at once. Each cause is a model that predicts the
# split's statistics from the reference profile; it is named only when it fits (absolutely) and fits clearly better
# than the unchanged reference and than every other model. The pooled pixel-value histogram, which no change of
# labels or geometry alters, first says whether the pixel VALUES changed (inverted, rescaled, noise) or not; the
# class mean images must then agree with that model or, for unchanged values, with one geometric or label model.
FIT_SE_FACTOR = 3.0          # a predicted class mean image fits within 3 standard errors of its sampling noise ...
FIT_FLOOR = 0.02             # ... or 0.02 RMS (0..1 scale), the larger: profile rounding and the models' approximations
CLEAR_RATIO = 0.5            # a named model's misfit is at most half that of the unchanged reference and of any rival
HIST_FIT_MAX = 0.04          # JS distance within which a modelled pooled histogram matches (sampling alone: ~0.01)
HIST_CLEAR_RATIO = 0.25      # a changed-values model must match 4x closer than the unchanged and the other models
MIN_RESCALE = 0.1            # |ln k| < 0.1 (a factor within ~10% of 1) is not called a rescaling
MIN_NOISE_STD = 4.0          # grey levels: weaker noise is not called noise
RESCALE_AGREEMENT = 0.25     # |ln| of the ratio of the factors fitted to the histogram and to the mean images
MAX_SHIFT = 6                # pixels searched in each direction for a shift
MIN_LABEL_CLASSES = 3        # label permutations and unrelated labels are judged on 3 classes or more
MIN_UNRELATED_SHARE = 0.25   # class means moved at least 25% of the way to the overall mean: labels (partly) random
FOREIGN_INK_KS = 0.25        # another data set: the per-image mean intensity's distribution moved this far (KS) ...
FOREIGN_CORRELATION = 0.9    # ... and more than half the class mean shapes correlate below this with every
FOREIGN_CLASS_SHARE = 0.5    #     reference class's (position, size, flips and quarter turns normalised away)
SHAPE_RADIUS = 7.0           # px: the radius of gyration mean images are scaled to before their shapes are compared

CAUSES = {   # cause -> how a message names it (followed by what was measured)
    "inverted": "inverted images (255 - value)",
    "mirrored": "images mirrored left-right",
    "upside_down": "images upside down",
    "rotated_180": "images rotated 180 degrees",
    "rotated_90_cw": "images rotated 90 degrees clockwise",
    "rotated_90_ccw": "images rotated 90 degrees counter-clockwise",
    "transposed": "images transposed (rows and columns swapped)",
    "anti_transposed": "images transposed about the anti-diagonal",
    "shifted": "images shifted",
    "rescaled": "intensity rescaled",
    "noise": "noise added",
    "labels_permuted": "labels permuted",
    "labels_unrelated": "labels unrelated to the images",
    "another_dataset": "another data set",
}
UNKNOWN = "cause unknown (no known corruption explains the drift)"

GEOMETRIC = {   # cause -> the corruption, applied to images (..., 28, 28)
    "mirrored": lambda a: a[..., :, ::-1],
    "upside_down": lambda a: a[..., ::-1, :],
    "rotated_180": lambda a: a[..., ::-1, ::-1],
    "rotated_90_cw": lambda a: np.rot90(a, -1, axes=(-2, -1)),
    "rotated_90_ccw": lambda a: np.rot90(a, 1, axes=(-2, -1)),
    "transposed": lambda a: np.swapaxes(a, -1, -2),
    "anti_transposed": lambda a: np.swapaxes(a[..., ::-1, ::-1], -1, -2),
}
VALUE_MODELS = ("unchanged", "inverted", "rescaled", "noise")
NOISE_SHAPES = ("gaussian", "uniform")


def class_mean_images(x: np.ndarray, y: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes judged: those with >= min_rows rows, their mean images (k, 784) on 0..1, their standard errors).
    A standard error is sqrt(mean over pixels of var / n): the RMS difference that sampling alone puts between a
    class's mean image and that of the population it was drawn from."""
    x = x.reshape(len(x), -1)
    judged = np.array([c for c in range(len(CLASS_NAMES)) if (y == c).sum() >= max(min_rows, 1)], dtype=np.int64)
    means, se = np.zeros((len(judged), x.shape[1])), np.zeros(len(judged))
    for i, c in enumerate(judged):
        xc = x[y == c].astype(np.float64) / 255.0
        means[i], se[i] = xc.mean(axis=0), np.sqrt(xc.var(axis=0).mean() / len(xc))
    return judged, means, se


def misfit(means: np.ndarray, predicted: np.ndarray, tolerance: np.ndarray) -> float:
    """How far a model's predicted class mean images lie from the observed ones: the largest RMS difference over the
    classes, each divided by its class's tolerance. <= 1: the model explains every judged class."""
    rms = np.sqrt(((means - predicted.reshape(means.shape)) ** 2).mean(axis=1))
    return float((rms / tolerance).max()) if len(rms) else float("inf")


def _levels(hist: np.ndarray) -> np.ndarray:
    """A 16-bin pixel histogram as a distribution over the 256 grey levels: the first bin (0..15) at 0, where these
    images' background is; every other bin spread evenly over its 16 levels."""
    width = 256 // HIST_BINS
    p = np.repeat(np.asarray(hist, dtype=np.float64) / width, width)
    p[:width] = 0.0
    p[0] = hist[0]
    return p


def rescaled_histogram(hist: np.ndarray, k: float) -> np.ndarray:
    """The 16-bin histogram of pixel values distributed as `hist`, multiplied by k (truncated, clipped at 255)."""
    levels = np.minimum(np.floor(np.arange(256) * k), 255).astype(np.int64)
    return np.bincount(levels, weights=_levels(hist), minlength=256).reshape(HIST_BINS, -1).sum(axis=1)


def _noise_kernel(std: float, shape: str) -> np.ndarray:
    """P(noise = d) for d = -255..255 of rounded zero-mean noise of standard deviation `std` grey levels (the
    Gaussian's tails folded into the end values)."""
    from scipy.special import ndtr

    d = np.arange(-255, 256)
    if shape == "gaussian":
        cdf = ndtr((d + 0.5) / std)
        cdf[-1] = 1.0                                           # the tails beyond +-255 clip like +-255
        return np.diff(cdf, prepend=0.0)
    half = std * np.sqrt(3.0)                                   # uniform on [-half, half]
    return np.clip(np.minimum(d + 0.5, half) - np.maximum(d - 0.5, -half), 0.0, None) / (2 * half)


def _clip_noise(std: float, shape: str) -> np.ndarray:
    """(256, 256): P(clip(v + noise, 0, 255) = w) for grey levels v (rows) and w (columns)."""
    kernel = _noise_kernel(std, shape)
    cumulative = np.cumsum(kernel)
    v, w = np.arange(256)[:, None], np.arange(256)[None, :]
    out = kernel[w - v + 255]                                   # noise d = w - v
    out[:, 0] = cumulative[255 - v[:, 0]]                       # d <= -v: clipped to 0
    out[:, 255] = 1.0 - cumulative[509 - v[:, 0]]                # d >= 255 - v: clipped to 255
    return out


def noisy_histogram(hist: np.ndarray, std: float, shape: str = "gaussian") -> np.ndarray:
    """The 16-bin histogram of pixel values distributed as `hist`, plus rounded noise of standard deviation `std`
    grey levels, clipped to 0..255."""
    return (_levels(hist) @ _clip_noise(std, shape)).reshape(HIST_BINS, -1).sum(axis=1)


def noisy_mean(ref_mean: np.ndarray, std: float, shape: str = "gaussian") -> np.ndarray:
    """E[clip(v + noise, 0, 255)] / 255 for pixels of mean v / 255 = ref_mean: the clipping lifts the dark
    background and dims the brightest pixels (each pixel's values taken to sit at its mean)."""
    expected = _clip_noise(std, shape) @ np.arange(256.0)
    return np.interp(np.asarray(ref_mean) * 255.0, np.arange(256.0), expected) / 255.0


def _js(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(a, b, base=2))


def _fit_1d(cost, lo: float, hi: float, points: int = 24) -> tuple[float, float]:
    """(argmin, min) of a cost over a log-spaced grid on [lo, hi], refined between the best point's neighbours."""
    from scipy.optimize import minimize_scalar

    grid = np.geomspace(lo, hi, points)
    values = [cost(v) for v in grid]
    i = int(np.argmin(values))
    best = minimize_scalar(cost, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, points - 1)]), method="bounded",
                           options={"xatol": 1e-3 * grid[i]})
    return (float(best.x), float(best.fun)) if best.fun < values[i] else (float(grid[i]), float(values[i]))


def histogram_fits(observed: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """The Jensen-Shannon distance of an observed pooled pixel histogram to the reference's under each model of the
    pixel values (VALUE_MODELS): unchanged, inverted (255 - value), multiplied by the best-fitting factor, plus the
    best-fitting noise (Gaussian or uniform); with the fitted factor and noise."""
    k, js_k = _fit_1d(lambda v: _js(observed, rescaled_histogram(reference, v)), 0.1, 5.0, 48)
    noise = {shape: _fit_1d(lambda v: _js(observed, noisy_histogram(reference, v, shape)), 0.5, 128.0)
             for shape in NOISE_SHAPES}
    shape = min(noise, key=lambda s: noise[s][1])
    return {"unchanged": _js(observed, reference), "inverted": _js(observed, reference[::-1]), "rescaled": js_k,
            "noise": noise[shape][1], "rescale_factor": k, "noise_std": noise[shape][0], "noise_shape": shape}


def value_model(js: dict[str, float], k: float, std: float) -> str | None:
    """The model of the pixel values (VALUE_MODELS) the pooled histogram supports, None when none matches. A model
    of changed values must match within HIST_FIT_MAX and HIST_CLEAR_RATIO times closer than every other model;
    a factor near 1 or a faint noise counts as unchanged values."""
    weak = {"rescaled": abs(np.log(k)) < MIN_RESCALE, "noise": std < MIN_NOISE_STD}
    best = min((m for m in VALUE_MODELS if not weak.get(m)), key=js.get)
    if best != "unchanged" and js[best] <= HIST_FIT_MAX and \
            js[best] <= HIST_CLEAR_RATIO * min(js[m] for m in VALUE_MODELS if m != best):
        return best
    return "unchanged" if js["unchanged"] <= HIST_FIT_MAX else None


def shifted(a: np.ndarray, dy: int, dx: int, wrap: bool = False) -> np.ndarray:
    """Images (..., 28, 28) moved dy pixels down and dx right; what leaves one side re-enters on the other (wrap)
    or the uncovered border is 0."""
    if wrap:
        return np.roll(a, (dy, dx), axis=(-2, -1))
    out = np.zeros_like(a)
    h, w = a.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        a[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def best_shift(means: np.ndarray, ref: np.ndarray, tolerance: np.ndarray) -> tuple[tuple[int, int, bool], float]:
    """((dy, dx, wrap), misfit) of the non-zero shift, within MAX_SHIFT pixels, of the reference mean images that
    best predicts the observed ones."""
    square = ref.reshape(len(ref), IMAGE_SIDE, IMAGE_SIDE)
    fits = {(dy, dx, wrap): misfit(means, shifted(square, dy, dx, wrap), tolerance)
            for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1) if dy or dx
            for wrap in (False, True)}
    best = min(fits, key=fits.get)
    return best, fits[best]


def label_assignment(means: np.ndarray, ref_all: np.ndarray, tolerance: np.ndarray) -> tuple[np.ndarray, float]:
    """(per judged class, the reference class its images match; misfit): the one-to-one matching of the observed to
    the reference class mean images with the least total misfit. The misfit is infinite unless every class's
    nearest reference class is its match, i.e. unless the nearest matches themselves are one-to-one."""
    from scipy.optimize import linear_sum_assignment

    cost = np.sqrt(((means[:, None, :] - ref_all[None, :, :]) ** 2).mean(axis=2)) / tolerance[:, None]
    rows, match = linear_sum_assignment(cost)
    match = match[np.argsort(rows)]
    if not np.array_equal(cost.argmin(axis=1), match):
        return match, float("inf")
    return match, float(cost[np.arange(len(means)), match].max())


def unrelated_label_fit(means: np.ndarray, ref: np.ndarray, overall: np.ndarray,
                        tolerance: np.ndarray) -> tuple[float, float]:
    """(share, misfit) of "a share of the rows carry a label unrelated to their image": each class mean image is
    then (1 - share) x its reference mean + share x the overall mean image, so the class means collapse together.
    The share is the least-squares fit over all judged classes, in 0..1."""
    toward = overall[None, :] - ref
    share = float(np.clip(np.sum((means - ref) * toward) / max(np.sum(toward * toward), 1e-12), 0.0, 1.0))
    return share, misfit(means, ref + share * toward, tolerance)


def intensity_ks(x: np.ndarray, weights: np.ndarray, deciles: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the distribution of the images' mean intensity (0..1) and the
    reference's: the classes' decile curves (linear between deciles, 0 at 0 and 1 at 1) mixed by `weights`. Labels,
    flips, rotations, shifts and blurs leave each image's mean intensity (its amount of ink) as it was."""
    t = np.linspace(0.0, 1.0, 401)
    knots_p = np.concatenate([[0.0], np.linspace(0, 1, INTENSITY_BINS + 1)[1:-1], [1.0]])
    reference = sum(w * np.interp(t, np.concatenate([[0.0], d, [1.0]]), knots_p) for w, d in zip(weights, deciles))
    observed = np.searchsorted(np.sort(x.reshape(len(x), -1).mean(axis=1) / 255.0), t, side="right") / len(x)
    return float(np.abs(observed - reference).max())


def normalised_shapes(images: np.ndarray) -> np.ndarray:
    """Mean images (k, 784) resampled (bilinear) so that their intensity centroid is the image centre and their
    radius of gyration SHAPE_RADIUS px: what is left to compare is the shape, not its position or size."""
    from scipy.ndimage import map_coordinates

    yy, xx = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE].astype(np.float64)
    centre = (IMAGE_SIDE - 1) / 2
    out = np.zeros((len(images), IMAGE_SIDE, IMAGE_SIDE))
    for i, image in enumerate(np.asarray(images, dtype=np.float64).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)):
        mass = image.sum()
        if mass <= 0:
            continue
        cy, cx = (image * yy).sum() / mass, (image * xx).sum() / mass
        scale = np.sqrt((image * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / mass) / SHAPE_RADIUS
        out[i] = map_coordinates(image, [cy + (yy - centre) * scale, cx + (xx - centre) * scale], order=1)
    return out.reshape(len(out), -1)


def shape_similarity(means: np.ndarray, ref_all: np.ndarray) -> np.ndarray:
    """Per judged class, the largest Pearson correlation of its normalised mean image (normalised_shapes) with any
    reference class's under any flip or quarter turn: near 1 for this dataset's images, whatever their labels,
    position, size, orientation or intensity scale; lower for another dataset's."""
    ref = normalised_shapes(ref_all).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    variants = np.concatenate([ref] + [g(ref) for g in GEOMETRIC.values()]).reshape(-1, IMAGE_SIDE * IMAGE_SIDE)
    a = normalised_shapes(means)
    a, b = a - a.mean(axis=1, keepdims=True), variants - variants.mean(axis=1, keepdims=True)
    norms = np.maximum(np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)), 1e-12)
    return ((a @ b.T) / norms).max(axis=1)


def diagnose(x: np.ndarray, y: np.ndarray, profile: dict[str, Any], min_class_rows: int) -> dict[str, Any]:
    """What happened to a split that drifts from the reference profile, judged on all classes (those with at least
    `min_class_rows` rows) at once: {"cause", "message", "looks_like" (per class 0..9), "statistics"}.

    cause: "none" (the unchanged reference explains the data), a key of CAUSES, or "unknown" (message UNKNOWN).
    The pooled pixel histogram says whether the values changed (value_model); the class mean images must then fit
    that model, or, for unchanged values, one geometric or label model must fit them clearly (see the constants).
    "another_dataset" needs no model to fit and the images to differ from the reference in pixel values, in ink
    per image (intensity_ks) and in the shapes of most class means (shape_similarity)."""
    x = x.reshape(len(x), -1)
    classes = [profile["classes"][name] for name in CLASS_NAMES]
    ref_all = np.array([c["mean_image"] for c in classes], dtype=np.float64)
    judged, means, se = class_mean_images(x, y, min_class_rows)
    result: dict[str, Any] = {"cause": "none", "message": "", "looks_like": [""] * len(CLASS_NAMES),
                              "statistics": {"classes_judged": int(len(judged))}}
    if not len(judged):
        return result
    tolerance = np.maximum(FIT_FLOOR, FIT_SE_FACTOR * se)
    ref = ref_all[judged]
    weights = np.bincount(y, minlength=len(CLASS_NAMES))[:len(CLASS_NAMES)] / len(y)
    hist = histogram_fits(_pixel_histogram(x), weights @ np.array([c["pixel_histogram"] for c in classes]))
    js = {m: hist[m] for m in VALUE_MODELS}
    k_mean = float(np.sum(means * ref) / max(np.sum(ref * ref), 1e-12))     # least squares: mean images ~ k x ref
    fits = {"unchanged": misfit(means, ref, tolerance), "inverted": misfit(means, 1.0 - ref, tolerance),
            "rescaled": misfit(means, np.minimum(k_mean * ref, 1.0), tolerance),
            "noise": misfit(means, noisy_mean(ref, hist["noise_std"], hist["noise_shape"]), tolerance)}
    square = ref.reshape(len(ref), IMAGE_SIDE, IMAGE_SIDE)
    fits.update({name: misfit(means, g(square), tolerance) for name, g in GEOMETRIC.items()})
    shift, fits["shifted"] = best_shift(means, ref, tolerance)
    match, share = judged, 0.0
    fits["labels_permuted"] = fits["labels_unrelated"] = float("inf")
    if len(judged) >= MIN_LABEL_CLASSES:
        match, permuted = label_assignment(means, ref_all, tolerance)
        if (match != judged).any():
            fits["labels_permuted"] = permuted
        share, unrelated = unrelated_label_fit(means, ref, weights @ ref_all, tolerance)
        if share >= MIN_UNRELATED_SHARE:
            fits["labels_unrelated"] = unrelated
    values = value_model(js, hist["rescale_factor"], hist["noise_std"])
    ink = intensity_ks(x, weights, np.array([c["intensity_deciles"] for c in classes]))
    shapes = shape_similarity(means, ref_all)
    foreign = int((shapes < FOREIGN_CORRELATION).sum())

    if values is None:
        cause = ("another_dataset" if ink >= FOREIGN_INK_KS and foreign > FOREIGN_CLASS_SHARE * len(judged)
                 and min(fits.values()) > 1 else "unknown")
    elif values == "unchanged":
        spatial = [*GEOMETRIC, "shifted", "labels_permuted", "labels_unrelated"]
        best = min(spatial, key=fits.get)
        rivals = [fits["unchanged"]] + [fits[m] for m in spatial if m != best]
        cause = ("none" if fits["unchanged"] <= 1 else
                 best if fits[best] <= 1 and fits[best] <= CLEAR_RATIO * min(rivals) else "unknown")
    else:
        agree = values != "rescaled" or abs(np.log(hist["rescale_factor"] / max(k_mean, 1e-12))) <= RESCALE_AGREEMENT
        cause = values if fits[values] <= 1 and agree else "unknown"

    result["cause"] = cause
    result["statistics"].update({
        "pixel_histogram_js": {m: round(v, 4) for m, v in js.items()}, "pixel_values": values or "no model fits",
        "rescale_factor": round(hist["rescale_factor"], 3), "mean_image_rescale_factor": round(k_mean, 3),
        "noise_std": round(hist["noise_std"], 1), "noise_shape": hist["noise_shape"],
        "mean_image_misfit": {m: round(v, 3) for m, v in fits.items()},
        "shift": {"down": shift[0], "right": shift[1], "wrap": shift[2]}, "unrelated_label_share": round(share, 3),
        "intensity_ks": round(ink, 3), "shape_similarity": [round(float(s), 3) for s in shapes]})
    if cause in ("none", "unknown"):
        result["message"] = UNKNOWN if cause == "unknown" else ""
        return result
    result["message"] = CAUSES[cause] + _cause_detail(cause, judged, match, hist, shift, share, ink, shapes)
    for c, m in zip(judged, match):
        if cause != "labels_permuted":
            result["looks_like"][c] = CAUSES[cause]
        elif c != m:
            result["looks_like"][c] = f"images of '{CLASS_NAMES[m]}' ({m})"
    return result


def _cause_detail(cause: str, judged: np.ndarray, match: np.ndarray, hist: dict, shift: tuple[int, int, bool],
                  share: float, ink: float, shapes: np.ndarray) -> str:
    """What was measured, in words, after the cause's name."""
    if cause == "shifted":
        dy, dx, wrap = shift
        moves = ([f"{abs(dy)} px {'down' if dy > 0 else 'up'}"] if dy else []) + \
                ([f"{abs(dx)} px {'right' if dx > 0 else 'left'}"] if dx else [])
        return " " + " and ".join(moves) + (" (wrapping around)" if wrap else "")
    if cause == "rescaled":
        return f": pixel values look multiplied by {hist['rescale_factor']:.2f}"
    if cause == "noise":
        return (f": the class mean images are unchanged but the pixel values look spread by {hist['noise_shape']} "
                f"noise of standard deviation {hist['noise_std']:.0f} grey levels")
    if cause == "labels_permuted":
        moved = [(int(c), int(m)) for c, m in zip(judged, match) if c != m]
        return ": " + ", ".join(f"'{CLASS_NAMES[m]}' ({m}) images carry label '{CLASS_NAMES[c]}' ({c})"
                                for c, m in moved[:3]) + (" ..." if len(moved) > 3 else "")
    if cause == "labels_unrelated":
        return (f": the class mean images have moved {share:.0%} of the way onto the overall mean image, as if "
                f"{share:.0%} of the rows carried a random label")
    if cause == "another_dataset":
        return (f": pixel values unlike any change of the reference's, per-image mean intensity distributed "
                f"differently (KS {ink:.2f}) and the mean images of {int((shapes < FOREIGN_CORRELATION).sum())} of "
                f"{len(judged)} classes shaped like no Fashion-MNIST class (correlation < {FOREIGN_CORRELATION:g})")
    return ""


def image_matrix(table) -> np.ndarray:
    """The (N, 784) uint8 pixel matrix of a table whose pixel1..pixel784 columns (in any order) hold integers
    0..255; the validate stage's format summaries establish that before it asks for the matrix."""
    return np.column_stack([table.column(name).to_numpy().astype(np.uint8, copy=False) for name in PIXEL_COLUMNS])
