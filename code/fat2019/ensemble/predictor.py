"""The one inference path: a models folder's trained members, each fold's 3-TTA, the fold
mean, the weighted average and the stacker, as the submission combines them.

predict.py predicts each (model, fold) unit with `Member.fold_scores`; ensemble.py combines
the gathered predictions with `normalised_weights`, `weighted_average` and `stacker_mean`
and saves the stacker with `SavedStacker`; tag.py loads everything with `Predictor.load`
(then `use_classes`) and scores clips with `Predictor.score`. Display scores (`Predictor.readable`) are the
stacker's output through its saved calibration (docs/models_folder.md): one increasing
map for every class, so each clip's ranking and the metric are those of the stacker.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from fat2019 import config, layout
from fat2019.cli import BadInput
from fat2019.config import COMBINATIONS
from fat2019.data.batches import ClipData, predict_tta
from fat2019.nn.models import build_model, build_stacker, load_weights
from fat2019.util.atomic import atomic_write_text

STACKER_BATCH = 256      # clips per stacker prediction batch (tiny inputs; every batch this size)


class PredictorError(BadInput):
    """Nothing to predict with (no trained members, an incomplete saved stacker, weights
    that do not fit); the message names the folder or file."""


# ---------------------------------------------------------------------------------------
# Combining members
# ---------------------------------------------------------------------------------------

def normalised_weights(weights) -> np.ndarray:
    """Weights summing to 1; a plain mean when they are all 0 (e.g. `se` alone, weight 0)."""
    weights = np.asarray(weights, np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return weights / weights.sum()


def weighted_average(member_scores: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The members' scores (each (clips, classes)) weighted by normalised `weights`."""
    return np.tensordot(np.stack(member_scores, -1), weights, axes=([-1], [0])).astype(np.float32)


def stack_inputs(member_scores: list[np.ndarray], average: np.ndarray) -> np.ndarray:
    """(clips, classes, members + 1): each member's scores, the weighted average last."""
    return np.stack([*member_scores, average], axis=-1).astype(np.float32)


class StackerNet:
    """One stacker network that each fold's weights are put into to predict, fed batches
    of one size (the last one padded with zeros): its predict function is traced once for
    every fold and any number of clips. A network per fold, and a short last batch, were
    each traced anew, and TensorFlow warned of the retracing."""

    def __init__(self, n_classes: int, n_inputs: int, offset: float):
        self.model = build_stacker(n_classes, n_inputs, offset=offset)
        self.batch = np.zeros((STACKER_BATCH, n_classes, n_inputs), np.float32)

    def predict(self, x: np.ndarray, weights: list[np.ndarray] | None = None) -> np.ndarray:
        """The stacker's output on stack_inputs `x`, with `weights` (a fold's) put in first."""
        if weights is not None:
            self.model.set_weights(weights)
        out = np.zeros(x.shape[:2], np.float32)
        for lo in range(0, len(x), STACKER_BATCH):
            part = x[lo: lo + STACKER_BATCH]
            self.batch[:len(part)] = part
            self.batch[len(part):] = 0.0
            out[lo: lo + len(part)] = keras.ops.convert_to_numpy(self.model.predict_on_batch(self.batch))[:len(part)]
        return out

    def load(self, path: Path) -> "StackerNet":
        load_weights(self.model, path)
        return self

    def classwise_weights(self) -> np.ndarray:
        """(classes, inputs): the per-class weights over the models and their average."""
        return keras.ops.convert_to_numpy(self.model.get_layer("classwise_weights").kernel)


def stacker_mean(net: StackerNet, fold_weights: list[list[np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The mean over the fold stackers (each one's weights) of their outputs on stack_inputs `x`."""
    total = np.zeros(x.shape[:2], np.float64)
    if not len(x):   # own data may have no test clips
        return total.astype(np.float32)
    for weights in fold_weights:
        total += net.predict(x, weights)
    return (total / len(fold_weights)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Readable scores: the stacker's output calibrated on its out-of-fold predictions
# ---------------------------------------------------------------------------------------

def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def fit_calibration(scores: np.ndarray, y_true: np.ndarray) -> dict:
    """Platt scaling of the stacker, one (slope, intercept) for all classes, fitted by
    logistic regression of every (clip, class) label on the logit of its score. One shared
    increasing map keeps the order of the scores within each clip and within each class,
    so the ranking (and lwlrap) is the stacker's own. The identity when the fit is not
    increasing (a stacker no better than chance)."""
    from sklearn.linear_model import LogisticRegression   # only ensemble.py fits one

    x, y = logit(scores).reshape(-1, 1), (np.asarray(y_true) > 0.5).ravel()
    if y.all() or not y.any():
        return {"method": "identity"}
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not slope > 0:
        return {"method": "identity"}
    return {"method": "platt", "slope": slope, "intercept": intercept}


def calibrate(scores: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Scores through a saved calibration (fit_calibration); unchanged without one."""
    if not calibration or calibration.get("method") == "identity":
        return np.asarray(scores, np.float32)
    z = calibration["slope"] * logit(scores) + calibration["intercept"]
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


# ---------------------------------------------------------------------------------------
# What a models folder holds
# ---------------------------------------------------------------------------------------

def trained_folds(folder: Path) -> list[int]:
    """Fold numbers whose training finished (fold<k>.json and fold<k>.weights.h5)."""
    return [k for k in layout.fold_numbers_on_disk(folder) if layout.is_finished(folder, layout.fold_prefix(k))]


@dataclass
class Member:
    """A zoo model as inference uses it: its config at the profile's scale, its folder,
    its trained folds and its weight in the average (normalised over a Predictor's members)."""
    config: config.ModelConfig
    folder: Path
    folds: list[int]
    weight: float

    def build(self, n_classes: int) -> keras.Model:
        return build_model(self.config, n_classes)

    def fold_scores(self, model: keras.Model, fold: int, clips: ClipData, batch_size: int,
                    workers: int) -> np.ndarray:
        """Fold `fold`'s weights (loaded into `model`, from `build`) on the clips, 3-TTA."""
        path = layout.weights_path(self.folder, layout.fold_prefix(fold))
        try:
            load_weights(model, path)
        except (ValueError, OSError) as e:   # other widths or classes than the record's; a broken file
            raise PredictorError(f"{path} does not fit a {self.config.name} with {model.outputs[0].shape[-1]} "
                                 f"classes and {self.config.duration} s crops (its folder's "
                                 f"{layout.RUN_JSON} says how it was trained): {e}") from None
        return predict_tta(model, clips, self.config.crop_samples, batch_size, workers)

    def scores(self, clips: ClipData, n_classes: int, batch_size: int, workers: int) -> np.ndarray:
        """The mean over the member's trained folds."""
        model = self.build(n_classes)
        total = np.zeros((len(clips), n_classes), np.float64)
        for k in self.folds:
            total += self.fold_scores(model, k, clips, batch_size, workers)
        return (total / len(self.folds)).astype(np.float32)


def choose_members(models_dir: Path, profile: config.Profile, names: list[str] | None,
                   weights: list[float] | None = None) -> list[Member]:
    """The trained members to predict with. `names` (or the whole zoo) in zoo order; named
    ones must be trained. Without `names`, untrained members are left out (with a note)
    and so are weight-0 ones while others have a weight. `weights` (a saved stacker's
    average weights, for `names`) replace the zoo's."""
    wanted = config.select_models(names)
    found = [(m, trained_folds(Path(models_dir) / m.name)) for m in wanted]
    untrained = [m.name for m, folds in found if not folds]
    if names and untrained:
        raise PredictorError(f"--models {' '.join(untrained)}: no trained folds in {models_dir} (looked for "
                             f"<model>/fold<k>.weights.h5); run code/train.py --models ... first")
    trained = [(m, folds) for m, folds in found if folds]
    if not trained:
        raise PredictorError(f"no trained models in {models_dir} (looked for <model>/fold<k>.weights.h5 of "
                             f"{', '.join(m.name for m in wanted)}); run code/train.py, or point --models-dir "
                             f"at a folder of trained models")
    if weights is not None:      # as saved: the stacker was trained on averages made with these
        given = np.asarray(weights, np.float64)
    else:
        if not names:
            if untrained:
                print(f"note: not trained in {models_dir}, left out: {', '.join(untrained)}", file=sys.stderr)
            if any(m.weight > 0 for m, _ in trained):   # weight-0 members would add nothing
                trained = [(m, folds) for m, folds in trained if m.weight > 0]
        given = normalised_weights([m.weight for m, _ in trained])
    return [Member(profile.scale(m), Path(models_dir) / m.name, folds, float(w))
            for (m, folds), w in zip(trained, given)]


@dataclass
class SavedStacker:
    """The ensemble ensemble.py saved, as models/stacker/stacker.json records it (written
    last, so a folder with it is complete): the members it combines and their average
    weights, the classes, the stacker's folds and offset, the calibration of its output;
    the fitted combination's weights over the same members (0: left out) and calibration;
    which combination submission.csv holds; and the digest of what the fold stackers were
    fitted on (a rerun with the same inputs reuses them)."""
    models: list[str]
    average_weights: list[float]
    classes: list[str]
    n_folds: int
    offset: float
    calibration: dict = field(default_factory=lambda: {"method": "identity"})
    fitted_weights: list[float] | None = None
    fitted_calibration: dict = field(default_factory=lambda: {"method": "identity"})
    submission: str = "stacker"
    inputs_sha256: str | None = None

    def weights_paths(self, models_dir: Path) -> list[Path]:
        folder = layout.stacker_dir(models_dir)
        return [layout.stacker_weights_path(folder, k) for k in range(self.n_folds)]

    def save(self, models_dir: Path) -> None:
        atomic_write_text(layout.stacker_json(models_dir), json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, models_dir: Path) -> "SavedStacker | None":
        """The saved stacker (None when there is none); an error when its weights are missing."""
        path = layout.stacker_json(models_dir)
        if not path.is_file():
            return None
        saved = cls(**json.loads(path.read_text()))   # fields saved later than a folder: their defaults
        missing = [str(p) for p in saved.weights_paths(models_dir) if not p.is_file()]
        if missing:
            raise PredictorError(f"the saved stacker in {path.parent} lacks {missing}; rerun code/ensemble.py")
        return saved

    def apply(self, models_dir: Path, x: np.ndarray) -> np.ndarray:
        """The mean of the saved fold stackers on stack_inputs `x`."""
        net = StackerNet(x.shape[1], x.shape[2], self.offset)
        folds = [net.load(path).model.get_weights() for path in self.weights_paths(models_dir)]
        return stacker_mean(net, folds, x)


class Predictor:
    """Scores clips with a models folder as the submission does: every member's fold-mean
    3-TTA scores, combined by the saved stacker, by the saved fitted weights or by the
    weighted average (`mode`: "stacker", "fitted" or "average")."""

    def __init__(self, models_dir: Path, members: list[Member], stacker: SavedStacker | None, mode: str = "average"):
        self.models_dir, self.members, self.stacker, self.mode = Path(models_dir), members, stacker, mode
        self.classes: list[str] = []

    def use_classes(self, classes: list[str]) -> "Predictor":
        """The class list the members were trained with (the run's record, or a prediction
        CSV); it must be the saved ensemble's."""
        if self.stacker is not None and self.stacker.classes != classes:
            raise PredictorError(f"the saved stacker's classes ({len(self.stacker.classes)}) differ from the "
                                 f"models folder's ({len(classes)}); rerun code/ensemble.py")
        self.classes = list(classes)
        return self

    @classmethod
    def load(cls, models_dir: Path, profile: config.Profile, *, names: list[str] | None = None,
             combine: str = "auto") -> "Predictor":
        """The members and the saved ensemble; `use_classes` completes it. `combine`:
        "stacker" or "fitted" needs the saved ensemble (ensemble.py) and the members it
        uses; "auto" takes the combination submission.csv holds when there is a saved
        ensemble, `names` is not given and every member it uses is trained, else the
        weighted average; "average" always the weighted average."""
        if combine not in COMBINATIONS:
            raise ValueError(f"combine must be one of {COMBINATIONS}, not {combine!r}")
        saved = None
        if combine in ("stacker", "fitted") or (combine == "auto" and not names):
            saved = SavedStacker.load(models_dir)
            if saved is None and combine != "auto":
                raise PredictorError(f"no saved stacker in {layout.stacker_dir(models_dir)} (run code/ensemble.py)")
        mode = combine if combine != "auto" else saved.submission if saved is not None else "average"
        if saved is not None and mode == "fitted" and saved.fitted_weights is None:
            problem = f"{layout.stacker_json(models_dir)} was saved before fitted weights existed"
            if combine == "fitted":
                raise PredictorError(f"{problem}; rerun code/ensemble.py")
            saved, mode = None, "average"
        if saved is not None and mode != "average":
            names_used, weights = saved.models, saved.average_weights
            if mode == "fitted":   # members the fit left out (weight 0) are not needed
                names_used, weights = zip(*[(n, w) for n, w in zip(saved.models, saved.fitted_weights) if w > 0])
            untrained = [n for n in names_used if not trained_folds(Path(models_dir) / n)]
            if untrained:
                problem = (f"the saved {'stacker stacks' if mode == 'stacker' else 'fitted combination weighs'} "
                           f"{', '.join(untrained)}, with no trained folds in {models_dir}")
                if combine != "auto":
                    raise PredictorError(f"{problem}; train them or use --combine average")
                print(f"note: {problem}; using the weighted average", file=sys.stderr)
                saved, mode = None, "average"
        if saved is not None and mode != "average":
            # every member the combination was fitted on (for the stacker, weight-0 ones too), with its weights
            members = choose_members(models_dir, profile, list(names_used), list(weights))
            return cls(models_dir, members, saved, mode)
        return cls(models_dir, choose_members(models_dir, profile, names), None, "average")

    @property
    def combination(self) -> str:
        """What `score` returns, in words."""
        if self.mode == "stacker":
            return "stacker over the models' fold-mean 3-TTA scores and their weighted average"
        if self.mode == "fitted":
            return "weighted average of the models' fold-mean 3-TTA scores, weights fitted on their out-of-fold scores"
        return "weighted average of the models' fold-mean 3-TTA scores"

    @property
    def combiner(self) -> str:
        return {"stacker": "stacker", "fitted": "fitted weights"}.get(self.mode, "weighted average")

    def member_scores(self, clips: ClipData, batch_size: int, workers: int) -> list[np.ndarray]:
        return [m.scores(clips, len(self.classes), batch_size, workers) for m in self.members]

    def combine(self, member_scores: list[np.ndarray]) -> np.ndarray:
        """The submission's combination of the members' scores (the fitted combination is
        a weighted average whose members carry the fitted weights)."""
        average = weighted_average(member_scores, np.array([m.weight for m in self.members], np.float64))
        if self.mode != "stacker":
            return average
        return self.stacker.apply(self.models_dir, stack_inputs(member_scores, average))

    def score(self, clips: ClipData, batch_size: int, workers: int) -> np.ndarray:
        """(clips, classes): the scores the submission would give these clips."""
        return self.combine(self.member_scores(clips, batch_size, workers))

    @property
    def calibration(self) -> dict | None:
        if self.mode == "stacker":
            return self.stacker.calibration
        if self.mode == "fitted":
            return self.stacker.fitted_calibration
        return None

    def readable(self, scores: np.ndarray) -> np.ndarray:
        """`score`'s output as a person reads it: through the combination's saved
        calibration (same ranking); the weighted average as it is."""
        return calibrate(scores, self.calibration)

    @property
    def scale(self) -> str:
        """What `readable` scores are, in words (figure titles, the JSON)."""
        calibrated = (self.calibration or {}).get("method") == "platt"
        if self.mode == "average":
            return "weighted average of the members' probabilities"
        if calibrated:
            return f"{self.combiner} output calibrated on its out-of-fold predictions (Platt, one map for all classes)"
        return f"{self.combiner} output, uncalibrated"
