"""Tests of rice_models.progress: per-epoch lines with an ETA, bars on a terminal, plain lines otherwise."""

import io

import pytest

from rice_models.progress import EpochProgress, Progress, format_duration, progress
from rice_models.training import EpochRecord


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.4, "4 s"), (65, "1 min 05 s"), (7260, "2 h 01 min"), (float("nan"), "?")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_epoch_lines_carry_loss_f1_and_an_eta_from_the_mean_epoch_time() -> None:
    lines: list[str] = []
    callback = EpochProgress(4, lines.append, "cell dose|0")
    callback(EpochRecord(1, 0.6931, 0.5, 0.69, 2.0))
    callback(EpochRecord(2, 0.60, 0.75, 0.65, 4.0))
    assert lines[0] == (
        "cell dose|0: epoch 1/4: train loss 0.6931, val macro F1 0.500, val loss 0.6900 (2.0 s; ETA 6 s)"
    )
    assert lines[1].endswith("(4.0 s; ETA 6 s)")  # 2 epochs left at a mean of 3 s
    callback(EpochRecord(3, 0.5, None, None, 3.0))  # not validated: the line has no validation figures
    assert lines[-1] == "cell dose|0: epoch 3/4: train loss 0.5000 (3.0 s; ETA 3 s)"
    callback(EpochRecord(4, 0.4, 0.8, 0.6, 3.0))
    assert lines[-1].startswith("cell dose|0: epoch 4/4:") and lines[-1].endswith("(3.0 s; done)")
    with pytest.raises(ValueError):
        EpochProgress(0, lines.append)


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    assert list(progress(range(20), 20, "synthesising patients", out)) == list(range(20))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # every 10 %
    assert lines[-1].startswith("synthesising patients: 20/20 (")
    assert "\r" not in out.getvalue()


def test_a_bar_on_a_terminal() -> None:
    out = Terminal()
    with Progress(3, "writing the HTML report", out) as shown:
        for _ in range(3):
            shown.advance()
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and "writing the HTML report" in text
