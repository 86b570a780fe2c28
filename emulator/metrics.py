"""Reward curves from Coach training logs, read with the SageMaker SDK's own metric
definitions.

The SDK's Coach definitions (``^Training>.*Total reward=(.*?),`` and the ``Testing``
twin) match Coach's colourless log format::

    Training> 2019-07-01-10:00:00.123456 , Name=main_level/agent, Episode=12, Total reward=21.0, ...

Logs captured through compose prefix every line with ``<container> |`` and Coach's
default, coloured format reads ``<timestamp> Training - Name: ... Total reward: 21.0``
with ANSI codes; both are normalised to the colourless format before matching.
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sagemaker.rl import RLEstimator, RLToolkit

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COMPOSE_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)*[\w.-]+\s*\|(?:\x1b\[[0-9;]*m)* ?")
# Coach's coloured log_dict: "<ts> " + PURPLE prefix END " - " + (BLUE "key: " END value " ")*
_COLOURED = re.compile(r"^(?P<ts>\S+ )?\x1b\[95m(?P<phase>[^\x1b]+)\x1b\[0m - (?P<rest>.*)$")
_COLOURED_FIELD = re.compile(
    r"\x1b\[94m(?P<key>[^\x1b]*?): \x1b\[0m(?P<value>.*?) ?(?=\x1b\[94m|$)"
)

EPISODE_SUFFIX = "/episode"
TRAINING = "reward-training"
TESTING = "reward-testing"


def _coach_metric_definitions() -> list[dict[str, str]]:
    return RLEstimator.default_metric_definitions(RLToolkit.COACH)


def normalise_line(line: str) -> str:
    """One log line as SageMaker would see it from Coach with colours off."""
    line = _COMPOSE_PREFIX.sub("", line.rstrip("\r\n"))
    coloured = _COLOURED.match(line)
    if coloured:
        fields = [f"{m['key']}={m['value']}" for m in _COLOURED_FIELD.finditer(coloured["rest"])]
        line = f"{coloured['phase']}> {coloured['ts'] or ''}, {', '.join(fields)}"
    return _ANSI.sub("", line)


def field(line: str, name: str) -> float | None:
    """The number after `name` in a Coach log line (``Episode=12``, ``Episode: 12``,
    ``Episode #12``), or None when the line has none."""
    found = re.search(rf"\b{re.escape(name)}(?:(?: #)?(?:=|:\s*)| #)([-0-9.eE+]+)", line)
    if not found:
        return None
    try:
        return float(found.group(1))
    except ValueError:
        return None


def parse_metrics(
    log_text: str, metric_definitions: list[dict[str, str]] | None = None
) -> dict[str, list[float]]:
    """Series of metric values found in a training log, in log order.

    Args:
        log_text: Container output of a training job, with or without compose prefixes
            and ANSI colours.
        metric_definitions: ``[{"Name": ..., "Regex": ...}]`` as estimators take them;
            defaults to the SDK's Coach definitions (``reward-training``,
            ``reward-testing``).

    Returns:
        ``{name: values}`` for every definition, plus ``{name}/episode`` with the episode
        number of each value when its lines carry one (``Episode=N``).
    """
    definitions = [
        (d["Name"], re.compile(d["Regex"]))
        for d in (
            metric_definitions if metric_definitions is not None else _coach_metric_definitions()
        )
    ]
    series: dict[str, list[float]] = {name: [] for name, _ in definitions}
    episodes: dict[str, list[float]] = {name: [] for name, _ in definitions}
    for raw in log_text.splitlines():
        line = normalise_line(raw)
        for name, regex in definitions:
            match = regex.search(line)
            if not match:
                continue
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            series[name].append(value)
            episode = field(line, "Episode")
            episodes[name].append(float("nan") if episode is None else episode)
    for name, numbers in episodes.items():
        if any(n == n for n in numbers):  # n == n is False only for NaN
            series[name + EPISODE_SUFFIX] = numbers
    return series


def format_table(metrics: dict[str, list[float]]) -> str:
    """A short summary of Coach reward series from ``parse_metrics``."""
    training = metrics.get(TRAINING, [])
    testing = metrics.get(TESTING, [])
    if not training and not testing:
        return (
            "No Coach reward lines in the log. Coach must log with colours off "
            "(`Training> ..., Total reward=...`) for SageMaker's metric definitions to match."
        )
    rows = [("training episodes", str(len(training)))]
    if training:
        last = training[-10:]
        rows += [
            ("first training reward", f"{training[0]:g}"),
            ("last training reward", f"{training[-1]:g}"),
            ("best training reward", f"{max(training):g}"),
            (f"mean of last {len(last)} training rewards", f"{fmean(last):.2f}"),
        ]
    rows += [
        ("evaluations", str(len(testing))),
        ("best evaluation reward", f"{max(testing):g}" if testing else "-"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _x_axis(metrics: dict[str, list[float]], name: str) -> tuple[list[float], bool]:
    episodes = metrics.get(name + EPISODE_SUFFIX)
    if episodes and all(e == e for e in episodes):
        return episodes, True
    return [float(i) for i in range(1, len(metrics.get(name, [])) + 1)], False


def plot_reward_curve(metrics: dict[str, list[float]], path: str | Path) -> Path:
    """Write a PNG of training reward per episode, with evaluation rewards as points.

    Returns:
        The path written.
    """
    # The object API with the Agg canvas draws without pyplot, so no GUI backend is
    # touched and the caller's matplotlib state stays as it was.
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    by_episode = True
    if metrics.get(TRAINING):
        x, by_episode = _x_axis(metrics, TRAINING)
        axes.plot(x, metrics[TRAINING], linewidth=1, label="training reward")
    if metrics.get(TESTING):
        x, testing_by_episode = _x_axis(metrics, TESTING)
        by_episode = by_episode and testing_by_episode
        axes.scatter(x, metrics[TESTING], color="tab:orange", zorder=3, label="evaluation reward")
    axes.set_xlabel("episode" if by_episode else "log entry")
    axes.set_ylabel("total reward")
    axes.set_title("Coach reward")
    axes.grid(alpha=0.3)
    if axes.has_data():
        axes.legend(loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
