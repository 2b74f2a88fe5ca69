"""Print the model zoo as a markdown table: parameters and FLOPs per clip of every member.

    .venv/bin/python code/tools/zoo_table.py                  # the original sizes (5 s crops, full width)
    .venv/bin/python code/tools/zoo_table.py --profile demo   # the demo profile's scaled-down models

FLOPs: see flops.py (analytic, per layer; a multiply-add counts as 2).
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the library, fat2019, is in code/

from fat2019 import cli  # first: it quiets TensorFlow's C++ log lines before anything imports TensorFlow
from fat2019 import config


def zoo_table(profile: config.Profile, n_classes: int) -> str:
    import keras   # here: --help stays free of Keras

    from fat2019.nn import models
    from fat2019.nn.flops import count_flops

    lines = [
        f"Model zoo at profile `{profile.name}`: crop {profile.duration:g} s, "
        f"width x{profile.width:g}, {n_classes} classes. FLOPs: forward pass of one crop, "
        "counted analytically per layer, a multiply-add = 2 FLOPs.",
        "",
        "| model | backbone | pool modes | w_ratio | params | GFLOPs / clip "
        "| conv GFLOPs | log-mel GFLOPs | BiGRU GFLOPs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for member in config.ZOO:
        cfg = profile.scale(member)
        model = models.build_model(cfg, n_classes)
        f = {k: v / 1e9 for k, v in count_flops(model).items()}
        lines.append(
            f"| {cfg.name} | {cfg.backbone} | {', '.join(cfg.pool_modes)} | {cfg.w_ratio:g} "
            f"| {model.count_params():,} | {f['total']:.3f} | {f['conv']:.3f} "
            f"| {f['logmel']:.3f} | {f['gru']:.4f} |")
        keras.backend.clear_session()
    return "\n".join(lines)


def main(argv=None):
    parser = cli.script_parser(__doc__)
    parser.add_argument("--profile", default="full", choices=sorted(config.PROFILES),
                        help="model scaling to report (default: full)")
    parser.add_argument("--n-classes", type=int, default=None,
                        help="output classes (default: 80, or the demo data's class count)")
    args = parser.parse_args(argv)
    profile = config.PROFILES[args.profile]
    n_classes = args.n_classes or profile.demo_sizes.get("n_classes", 80)
    print(zoo_table(profile, n_classes))
    return 0


if __name__ == "__main__":
    cli.run_stage(main)
