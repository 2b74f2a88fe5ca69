"""Figures a user reads: every text fully inside the image, and the notes they need."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg


def reaches_past_edges(fig) -> bool:
    """Whether anything drawn (texts, ticks, legends) lies past the figure's edges, i.e. is
    cut off in the PNG: the bounding box of all drawn artists against the figure's."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    drawn, (width, height) = fig.get_tightbbox(fig.canvas.get_renderer()), fig.get_size_inches()
    slack = 0.01   # inches: rounding
    return drawn.x0 < -slack or drawn.y0 < -slack or drawn.x1 > width + slack or drawn.y1 > height + slack


def test_confusion_figure_keeps_its_labels_inside_with_long_class_names():
    import inspect_oof
    table = pd.DataFrame({"true": ["Accelerating_and_revving_and_vroom"] * 3,
                          "wrong": ["Race_car_and_auto_racing", "Bus", "Motorcycle"],
                          "count": [5, 3, 1], "share": [0.5, 0.3, 0.1]})
    fig = inspect_oof.confusion_figure(table, 20, "stacker_oof.csv: the 3 most frequent confusions "
                                                  "(300 clips, lwlrap 0.8560)")
    assert not reaches_past_edges(fig)
