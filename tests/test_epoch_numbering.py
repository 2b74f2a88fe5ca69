"""One epoch numbering for a reader: the README counts epochs from 1, as the logs,
history.csv and report.png do; the profile's fields keep the original's 0-based numbers."""
import re
from pathlib import Path

import pytest

from fat2019 import config
from fat2019.engine.training import Schedule

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def row(setting: str) -> list[str]:
    line = next(line for line in README.splitlines() if line.startswith(f"| {setting} |"))
    return [cell.strip() for cell in line.strip("|").split("|")[1:]]


@pytest.mark.parametrize("column,name", [(0, "full"), (1, "demo")])
def test_the_readme_profile_table_counts_epochs_from_1(column, name):
    p = config.PROFILES[name]
    numbers = lambda text: [int(n) for n in re.findall(r"\d+", text)]
    assert numbers(row("lr x0.5 from epoch")[column]) == [m + 1 for m in p.lr_milestones]
    assert numbers(row("early stop")[column]) == [p.early_stop_min_epoch + 1, p.early_stop_patience]
    assert numbers(row("pretraining epochs; lr x0.5 from epoch")[column]) == \
        [p.pretrain_epochs, *(m + 1 for m in p.pretrain_lr_milestones)]
    assert numbers(row("pretraining weights kept")[column]) == [p.pretrain_keep_from_epoch + 1, p.pretrain_epochs]


def test_the_first_halved_epoch_of_the_log_is_the_readmes():
    """The log's epoch n (1-based) runs at lr_at(n - 1): the README's "lr x0.5 from epoch 4"
    is the first log line with half the learning rate."""
    p = config.PROFILES["demo"]
    schedule = Schedule.curated(p, p.scale(config.ZOO[0]))
    first_halved = next(n for n in range(1, p.epochs + 1) if schedule.lr_at(n - 1) < schedule.lr_at(0))
    assert first_halved == int(re.findall(r"\d+", row("lr x0.5 from epoch")[1])[0])
