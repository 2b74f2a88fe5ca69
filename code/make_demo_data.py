"""Write a small synthetic dataset in the competition's layout, for the `demo` profile.

    .venv/bin/python code/make_demo_data.py                 # -> input/demo (the demo profile's data dir)
    .venv/bin/python code/make_demo_data.py --out DIR --seed 3 --curated 100 --classes 10

The folder gets exactly what the real competition download has, plus the test truth:

    train_curated.csv, train_noisy.csv    fname,labels   (labels comma-separated)
    sample_submission.csv                 fname + all 80 real class columns, values 0
    audio_train/*.wav, audio_test/*.wav
    test_labels.csv                       fname,labels   (held back, for scoring the demo)
    DEMO_DATASET                          marker: this generator wrote the folder, and how

Only a subset of the 80 classes occurs in the clips. Each present class gets a synthetic
"recipe" drawn from the seed (pitch range, harmonic timbre, band of noise, envelope, glide),
and every clip varies it (pitch, loudness, background noise, duration, silence padding,
onset), so a small CNN on log-mel can learn the classes, but not trivially: some classes are
"siblings" that share their spectrum and differ only in how the sound evolves over time.
The noisy set uses the same recipes with more background noise and ~30 % wrong labels.

Everything is a function of the seed: clip i of a set is rendered from its own random
generator, seeded from (seed, set, i), so clips can be rendered in any order or in parallel
and the same seed always gives byte-identical files.
"""
from __future__ import annotations

import os
from pathlib import Path

from fat2019 import cli
from fat2019 import config
from fat2019 import settings


def parse_args(argv: list[str] | None = None):
    demo = config.PROFILES["demo"]
    sizes = demo.demo_sizes
    parser = cli.script_parser(__doc__)
    parser.add_argument("--out", type=Path, default=settings.profile_folders(demo).data,
                        help="output folder (default: the demo profile's data dir, %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default %(default)s)")
    parser.add_argument("--curated", type=int, default=sizes["curated"],
                        help="curated clips (default %(default)s)")
    parser.add_argument("--noisy", type=int, default=sizes["noisy"],
                        help="noisy clips (default %(default)s)")
    parser.add_argument("--test", type=int, default=sizes["test"],
                        help="test clips (default %(default)s)")
    parser.add_argument("--classes", type=int, default=sizes["n_classes"],
                        help="classes present, out of the 80 (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes rendering clips; output is identical for any value "
                             "(default %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="write even into a folder this generator did not create "
                             "(its other files are left alone), and regenerate even when the "
                             "folder already holds this dataset")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fat2019.demo_data.writing import RefuseToOverwrite, make_demo_dataset   # after parsing: quick --help

    try:
        summary = make_demo_dataset(args.out, seed=args.seed, n_curated=args.curated,
                                    n_noisy=args.noisy, n_test=args.test,
                                    n_classes=args.classes, force=args.force,
                                    jobs=max(1, args.jobs), progress=True)
    except (RefuseToOverwrite, ValueError) as error:
        raise cli.BadInput(str(error)) from None
    print(summary.line())
    return 0


if __name__ == "__main__":
    cli.run_stage(main)
