"""The tagging model of the zoo and the ensemble's stacker (docs/faithfulness.md, "The model", "Prediction
and ensemble").

    audio (crop_samples,) -> LogMelSpectrogram (config.frontend; 64 mels by default) -> (time, 64, 1)
        -> stem -> 4 conv blocks ("9-layer CNN")   -> (time/8, 8, 512)  "backbone_out"
        -> mel-pair shuffle -> max over time -> mean over mel -> 1024
    global_feat (128, 12) -> BN -> BiGRU(128, sum) -> BiGRU(128, sum) -> max over time -> 128
    other (1,)
    concat [1024, 128, 1] -> Dense(n_classes, sigmoid)

Six backbones share one block builder; they differ only in the switches of `Backbone`.
Every conv width is multiplied by `config.width` (the profile's scaling knob) and, for the
blocks, by `config.w_ratio` (only the msc_se members of the zoo set it; it is 1.0 elsewhere).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import keras
from keras import layers

from fat2019.config import N_GLOBAL_STATS, N_GLOBAL_STEPS, SAMPLE_RATE, ModelConfig
from fat2019.nn.frontend import LogMelSpectrogram
from fat2019.nn.heads import ClasswiseWeights, HighwayGate, MelPairShuffle, ShiftedTanh, TimeMaxMelMean
from fat2019.nn.pooling import AxisSplitPool
from fat2019.nn.recurrent import BiGRUSum

BN_MOMENTUM = 0.85
STEM_FILTERS = 64
MULTI_SCALE_STEM = (32, (3, 5, 7))      # filters per branch, kernel sizes
BLOCKS = ((96, (3, 2)), (128, (3, 2)), (256, (3, 3)), (512, (3, 2)))  # filters, pool sizes
POOL_STRIDES = (1, 2)
SE_REDUCTION = 4
GRU_UNITS = 128


def load_weights(model: keras.Model, path) -> None:
    """model.load_weights(path), quietly. Weight files carry the optimizer's slots; loading
    them into a fresh model (pretrained start, prediction, tagging) rightly skips those,
    and Keras warns about it every time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


@dataclass(frozen=True)
class Backbone:
    """What distinguishes the backbone variants of the zoo."""
    multi_scale_stem: bool = False      # stem = parallel 3x3, 5x5, 7x7 convs
    squeeze_excite: bool = False        # SE after every ReLU
    merge: str | None = None            # None | "cat" | "highway": the block's 2nd path


BACKBONES = {
    "conv": Backbone(),
    "se": Backbone(squeeze_excite=True),
    "msc_se": Backbone(multi_scale_stem=True, squeeze_excite=True),
    "cat": Backbone(merge="cat"),
    "se_cat": Backbone(squeeze_excite=True, merge="cat"),
    "highway": Backbone(merge="highway"),
}


def scaled(n: int, factor: float) -> int:
    """A width scaled by `factor`, rounded, at least 1."""
    return max(1, int(round(n * factor)))


# ---------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------

def squeeze_excite(x, name: str):
    """Channel attention: global average pool - Dense(C/4, relu) - Dense(C, sigmoid) - scale."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Dense(max(1, channels // SE_REDUCTION), activation="relu", name=f"{name}_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def bn_relu(x, backbone: Backbone, name: str):
    """BatchNorm - ReLU, plus squeeze-excitation for the SE backbones."""
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if backbone.squeeze_excite:
        x = squeeze_excite(x, name=f"{name}_se")
    return x


def conv_bn_relu(x, filters: int, backbone: Backbone, name: str, use_bias: bool = True):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias, name=f"{name}_conv")(x)
    return bn_relu(x, backbone, name)


def stem(x, backbone: Backbone, width: float):
    """One no-bias 3x3 conv of 64, or the multi-scale stem: 3x3, 5x5, 7x7 convs of 32."""
    if not backbone.multi_scale_stem:
        return conv_bn_relu(x, scaled(STEM_FILTERS, width), backbone, "stem", use_bias=False)
    filters, kernels = MULTI_SCALE_STEM
    branches = [layers.Conv2D(scaled(filters, width), k, padding="same", use_bias=False,
                              name=f"stem_conv{k}x{k}")(x) for k in kernels]
    x = layers.Concatenate(name="stem_concat")(branches)
    return bn_relu(x, backbone, "stem")


def conv_block(x, filters: int, pool_sizes, pool_modes, backbone: Backbone, name: str,
               pool: bool = True, max_pool: str = "slices"):
    """conv - BN - ReLU - pool(p1, stride 1, m1) - [2nd path] - pool(p2, stride 2, m2).

    The 2nd path is conv - BN - ReLU, and for the variants:
    - cat: concat(first pooled output, 2nd conv output) - 1x1 conv back to `filters`;
    - highway: y = T * H + (1 - T) * P(x), H the 2nd conv output, x the first pooled
      output, P a 1x1 conv projection and T a sigmoid 1x1 conv of x.
    """
    x = conv_bn_relu(x, filters, backbone, f"{name}_1")
    if pool:
        x = AxisSplitPool(pool_sizes[0], POOL_STRIDES[0], pool_modes[0], max_pool, name=f"{name}_pool1")(x)
    h = conv_bn_relu(x, filters, backbone, f"{name}_2")
    if backbone.merge == "cat":
        h = layers.Concatenate(name=f"{name}_cat")([x, h])
        h = layers.Conv2D(filters, 1, name=f"{name}_cat_1x1")(h)
    elif backbone.merge == "highway":
        gate = layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_gate_1x1")(x)
        carry = layers.Conv2D(filters, 1, name=f"{name}_carry_1x1")(x)
        h = HighwayGate(name=f"{name}_highway")([gate, h, carry])
    elif backbone.merge is not None:
        raise ValueError(f"unknown merge {backbone.merge!r}")
    if pool:
        h = AxisSplitPool(pool_sizes[1], POOL_STRIDES[1], pool_modes[1], max_pool, name=f"{name}_pool2")(h)
    return h


def build_backbone(mel, config: ModelConfig, max_pool: str = "slices"):
    """Log-mel (batch, time, 64, 1) -> feature map (batch, time/8, 8, 512 * widths).
    `max_pool`: how the pools take a max off TensorFlow (pooling.MAX_POOL_WAYS)."""
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {list(BACKBONES)}")
    backbone = BACKBONES[config.backbone]
    x = stem(mel, backbone, config.width)
    for i, (filters, pool_sizes) in enumerate(BLOCKS, start=1):
        x = conv_block(x, scaled(filters, config.width * config.w_ratio), pool_sizes,
                       config.pool_modes, backbone, name=f"block{i}", pool=i < len(BLOCKS),
                       max_pool=max_pool)
    # A named no-op so the feature map can be fetched by name (tests, inspection).
    return layers.Identity(name="backbone_out")(x)


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------

def global_feature_branch(g, width: float, gru_unroll: int = 1):
    """BN - BiGRU - BiGRU (sequences, forward + backward summed) - max over time.
    `gru_unroll`: BiGRUSum's steps per scan iteration on JAX (1 for the zoo)."""
    units = scaled(GRU_UNITS, width)
    g = layers.BatchNormalization(name="global_bn")(g)
    for i in (1, 2):
        # Bidirectional(GRU(units, return_sequences=True), merge_mode="sum") with Keras'
        # GRU defaults (tanh, sigmoid, reset_after=True: the cuDNN-compatible ones, like
        # the original's CuDNNGRU); fused into one scan on JAX (layers.BiGRUSum).
        g = BiGRUSum(units, unroll=gru_unroll, name=f"global_bigru{i}")(g)
    return layers.GlobalMaxPooling1D(name="global_max")(g)


def build_model(config: ModelConfig, n_classes: int, global_branch=None, *,
                max_pool: str = "slices", gru_unroll: int = 1) -> keras.Model:
    """The tagger of one zoo member, compiled with Nadam(config.lr) and mean BCE.

    The GPU benchmark's options, which the zoo leaves at their defaults (the same values
    either way, other speeds): `global_branch(g, width)` replaces `global_feature_branch`
    (the step's before/after and ablation); `max_pool` and `gru_unroll` are passed to
    the pools and the BiGRUs."""
    audio = keras.Input((config.crop_samples,), name="audio")
    global_feat = keras.Input((N_GLOBAL_STEPS, N_GLOBAL_STATS), name="global_feat")
    other = keras.Input((1,), name="other")

    front = config.frontend
    mel = LogMelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=front.n_fft, hop_length=front.hop_length,
                            n_mels=front.n_mels, f_min=front.f_min, f_max=front.f_max, amin=front.amin,
                            top_db=front.top_db, name="logmel")(audio)
    x = build_backbone(mel, config, max_pool)
    x = MelPairShuffle(name="mel_pair_shuffle")(x)   # (t, m, c) -> (t, m/2, 2c)
    x = TimeMaxMelMean(name="time_max_mel_mean")(x)  # -> (2c,)

    g = (global_branch(global_feat, config.width) if global_branch
         else global_feature_branch(global_feat, config.width, gru_unroll))
    x = layers.Concatenate(name="features")([x, g, other])
    # float32 output so the loss stays float32 under a mixed-precision policy.
    out = layers.Dense(n_classes, activation="sigmoid", dtype="float32", name="tags")(x)

    model = keras.Model({"audio": audio, "global_feat": global_feat, "other": other}, out,
                        name=config.name)
    model.compile(optimizer=keras.optimizers.Nadam(learning_rate=config.lr),
                  loss=keras.losses.BinaryCrossentropy())
    return model


# ---------------------------------------------------------------------------------------
# The stacker
# ---------------------------------------------------------------------------------------

def build_stacker(n_classes: int, n_inputs: int, lr: float = 1e-4,
                  offset: float = 1.6) -> keras.Model:
    """Per-class ensemble weights, then label correlation (docs/faithfulness.md, "Prediction and ensemble").

    Input (n_classes, n_inputs): per class, the predictions of the n_inputs - 1 models and
    their weighted average in the last column. At initialisation the output is
    (tanh(average - offset) + 1) / 2, a monotone map of the plain weighted average.
    """
    x_in = keras.Input((n_classes, n_inputs), name="predictions")
    x = ClasswiseWeights(kernel_constraint=keras.constraints.UnitNorm(axis=-1),
                         name="classwise_weights")(x_in)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(n_classes, use_bias=False, kernel_initializer="identity",
                     name="label_mixing")(x)
    out = ShiftedTanh(offset, name="shifted_tanh")(x)
    model = keras.Model(x_in, out, name="stacker")
    model.compile(optimizer=keras.optimizers.Nadam(learning_rate=lr),
                  loss=keras.losses.BinaryCrossentropy())
    return model
