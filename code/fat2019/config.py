"""Every setting of the pipeline, defined once: the model zoo and the two profiles.

`full` holds the original system's numbers (docs/faithfulness.md); `demo` shrinks the same
architectures and schedules so the whole pipeline runs on a 2-core CPU in minutes.
Stage scripts never hard-code a number that lives here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE = 44_100
N_GLOBAL_STEPS = 128          # global features: steps per clip
N_GLOBAL_STATS = 12           # mean, std, max-min, 9 percentiles
GLOBAL_PERCENTILES = (0, 1, 25, 30, 50, 60, 75, 99, 100)
LENGTH_NORMALISER = 441_000   # length feature = len(trimmed) / 441000 (10 s)
TRIM_TOP_DB = 60              # librosa.effects.trim default

# Where the stages read and write when no flag says otherwise (relative to the repo root;
# settings.py makes the folders of them).
REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURES_DIR = "features"     # the feature cache, inside the data folder


@dataclass(frozen=True)
class FrontEnd:
    """The log-mel front end, the model's first layer (nn/frontend.py): the original's by
    default (docs/faithfulness.md, "The model"). tune.py searches it; a stage given
    `--frontend FILE` (the search's best_frontend.json) builds every model with that one."""
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 512
    f_min: float = 0.0
    f_max: float | None = None          # None: the Nyquist frequency, SAMPLE_RATE / 2
    amin: float = 1e-10                 # the log's floor: dB = 10 log10(max(power, amin))
    top_db: float = 80.0                # dB below the clip's maximum, floored there


@dataclass(frozen=True)
class ModelConfig:
    """One member of the model zoo.

    `duration` (seconds of audio per crop) and `width` (multiplier of every conv width)
    are the scaling knobs a profile sets; the zoo itself is written at full size.
    """
    name: str
    backbone: str                       # conv | se | msc_se | cat | se_cat | highway
    pool_modes: tuple[str, str]         # (first, second) pooling of each block
    w_ratio: float = 1.0                # block width ratio (msc_se in the original)
    pretrained_from: str | None = None  # take noisy-pretrained weights of another model
    weight: float = 1.0                 # weight in the ensemble's weighted average
    duration: float = 5.0
    width: float = 1.0
    lr: float = 5e-4
    frontend: FrontEnd = FrontEnd()

    @property
    def crop_samples(self) -> int:
        return int(round(self.duration * SAMPLE_RATE))

    @property
    def pretrain_source(self) -> str:
        """The model whose noisy pretraining this model starts from."""
        return self.pretrained_from or self.name


# The final ensemble of the original solution (docs/faithfulness.md, "The zoo of the final ensemble").
ZOO: tuple[ModelConfig, ...] = (
    ModelConfig("v1mix", "conv", ("max", "avemax1"), weight=2.1),
    ModelConfig("max3exam", "conv", ("max", "avemax3"), pretrained_from="v1mix", weight=1.9),
    ModelConfig("model_MSC_se_r4_1.0_10fold", "msc_se", ("max", "avemax1"), w_ratio=1.0, weight=1.0),
    ModelConfig("model_MSC_se_r4_2.0_10fold", "msc_se", ("max", "avemax1"), w_ratio=2.0, weight=1.0),
    ModelConfig("model_se_r4_1.5_10fold", "msc_se", ("max", "avemax1"), w_ratio=1.5, weight=1.0),
    ModelConfig("se", "se", ("max", "avemax1"), weight=0.0),
)
ZOO_BY_NAME = {m.name: m for m in ZOO}


@dataclass(frozen=True)
class Profile:
    """Data size, model scaling and training schedule of one way to run the pipeline."""
    name: str
    # model scaling
    duration: float = 5.0               # seconds per training crop
    width: float = 1.0                  # conv width multiplier
    lr_multiplier: float = 1.0          # times each model's learning rate
    frontend: FrontEnd = FrontEnd()     # every model's log-mel (run.json records it on its own)
    # data layout (relative to the repo root)
    data_dir: str = "input"
    models_dir: str = "models"
    submissions_dir: str = "submissions"
    # folds
    n_folds: int = 10
    # curated training
    batch_size: int = 32
    predict_batch_size: int = 64        # validation / test batches (inference only)
    epochs: int = 40
    lr_milestones: tuple[int, ...] = (14, 21, 28)
    lr_factor: float = 0.5
    mixup_prob: float = 0.6
    mixup_weight: float = 0.7           # audio/labels mixed 0.7 * x + 0.3 * x[perm]
    label_smoothing: float = 0.01       # y = 0.01 * (1 - y) + 0.99 * y
    early_stop_min_epoch: int = 35      # stop when epoch >= this ...
    early_stop_patience: int = 10       # ... and this many epochs gave no improvement
    # noisy pretraining
    pretrain_epochs: int = 35
    pretrain_lr_milestones: tuple[int, ...] = (8, 12, 16)
    pretrain_mixup_prob: float = 0.7
    pretrain_keep_from_epoch: int = 28  # best curated-set score among epochs >= this
    # stacker
    stacker_lr: float = 1e-4
    stacker_batch_size: int = 40
    stacker_epochs: int = 1000
    stacker_patience: int = 15
    stacker_offset: float = 1.6
    # demo dataset size (make_demo_data.py); unused by `full`
    demo_sizes: dict = field(default_factory=dict)

    def scale(self, model: ModelConfig) -> ModelConfig:
        """The zoo model at this profile's crop length, width and front end."""
        return dataclasses.replace(model, duration=self.duration, width=self.width,
                                   lr=model.lr * self.lr_multiplier, frontend=self.frontend)


PROFILES = {
    "full": Profile(name="full"),
    # Same architectures and schedule shape, scaled for a 2-core CPU: 1.5 s crops (the
    # demo clips' median is 1.2 s), 1/8 of the widths, 3 folds, a few epochs with the
    # milestones scaled along. Small networks on few clips learn in 8 epochs only with a
    # 4x learning rate and batches of 16 (the comparison is in BENCHMARKS.md).
    "demo": Profile(
        name="demo", duration=1.5, width=0.125, lr_multiplier=4.0,
        data_dir="input/demo", models_dir="models/demo", submissions_dir="submissions/demo",
        n_folds=3, batch_size=16, epochs=8, lr_milestones=(3, 5, 7),
        early_stop_min_epoch=6, early_stop_patience=3,
        pretrain_epochs=5, pretrain_lr_milestones=(2, 3, 4), pretrain_keep_from_epoch=3,
        stacker_epochs=200, stacker_patience=15, stacker_lr=1e-3,
        demo_sizes={"n_classes": 20, "curated": 300, "noisy": 300, "test": 150},
    ),
}


def select_models(names: list[str] | None) -> list[ModelConfig]:
    """Zoo members by name, in zoo order; all of them when `names` is empty."""
    if not names:
        return list(ZOO)
    unknown = [n for n in names if n not in ZOO_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; the zoo has {list(ZOO_BY_NAME)}")
    return [m for m in ZOO if m.name in names]

# The ensemble's combinations of the members, each written by ensemble.py: the original's
# stacker and weighted average (fixed weights, ZOO above), and weights fitted on the OOF
# predictions (ensemble/fitted.py). ensemble.py --combine picks the one submission.csv holds;
# the default is the original's.
ENSEMBLE_COMBINATIONS = ("stacker", "average", "fitted")
SUBMISSION_COMBINATION = "stacker"
# How tag.py combines the members (--combine): auto = the submission's combination as
# ensemble.py saved it, when all its members are trained and --models is not given, else
# the weighted average (ensemble/predictor.py)
COMBINATIONS = ("auto", *ENSEMBLE_COMBINATIONS)
