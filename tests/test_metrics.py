"""Coach logs become reward series with SageMaker's own metric definitions."""

from __future__ import annotations

from emulator.metrics import format_table, normalise_line, parse_metrics, plot_reward_curve

# rl_coach/logger.py ScreenLogger.log_dict, colours off: "{prefix}> {timestamp} , k=v, ..."
COACH_LOG = """\
## agent: Starting evaluation phase
Heatup> 2024-05-01-10:00:00.000001 , Name=main_level/agent, Worker=0, Episode=1, Total reward=14.0, Exploration=1.0, Steps=14, Training iteration=0
Training> 2024-05-01-10:00:01.000001 , Name=main_level/agent, Worker=0, Episode=12, Total reward=21.0, Exploration=0.93, Steps=255, Training iteration=0
Training> 2024-05-01-10:00:02.000001 , Name=main_level/agent, Worker=0, Episode=13, Total reward=35.0, Exploration=0.92, Steps=290, Training iteration=1
Testing> 2024-05-01-10:00:03.000001 , Name=main_level/agent, Worker=0, Episode=13, Total reward=200.0, Exploration=0.0, Steps=490, Training iteration=1
Training> 2024-05-01-10:00:04.000001 , Name=main_level/agent, Worker=0, Episode=14, Total reward=12.0, Exploration=0.91, Steps=302, Training iteration=2
"""


def coloured(prefix: str, fields: dict[str, object]) -> str:
    """A line as Coach prints it with its default colours."""
    line = "2024-05-01-10:00:01.000001 " + f"\x1b[95m{prefix}\x1b[0m - "
    for key, value in fields.items():
        line += f"\x1b[94m{key}: \x1b[0m{value} "
    return line


def test_training_and_testing_rewards_are_read_in_log_order():
    metrics = parse_metrics(COACH_LOG)

    assert metrics["reward-training"] == [21.0, 35.0, 12.0]
    assert metrics["reward-testing"] == [200.0]


def test_episode_numbers_accompany_each_reward():
    metrics = parse_metrics(COACH_LOG)

    assert metrics["reward-training/episode"] == [12.0, 13.0, 14.0]
    assert metrics["reward-testing/episode"] == [13.0]


def test_heatup_episodes_are_not_training_rewards():
    assert parse_metrics(COACH_LOG.splitlines()[1])["reward-training"] == []


def test_compose_prefixes_ansi_codes_and_carriage_returns_are_ignored():
    line = COACH_LOG.splitlines()[2]
    via_compose = f"\x1b[36mabcdefghij-algo-1-x1y2z |\x1b[0m {line}\r\n"

    assert parse_metrics(via_compose)["reward-training"] == [21.0]


def test_coachs_coloured_format_is_read_like_the_colourless_one():
    fields = {
        "Name": "main_level/agent",
        "Worker": 0,
        "Episode": 7,
        "Total reward": 9.5,
        "Exploration": 0.97,
        "Steps": 80,
        "Training iteration": 0,
    }
    log = "\n".join(
        [coloured("Training", fields), coloured("Testing", {**fields, "Total reward": 50.0})]
    )

    metrics = parse_metrics(log)

    assert metrics["reward-training"] == [9.5]
    assert metrics["reward-testing"] == [50.0]
    assert metrics["reward-training/episode"] == [7.0]
    assert normalise_line(coloured("Training", {"Name": "a", "Total reward": 1.0, "Steps": 2})) == (
        "Training> 2024-05-01-10:00:01.000001 , Name=a, Total reward=1.0, Steps=2"
    )


def test_custom_metric_definitions_are_honoured():
    definitions = [{"Name": "steps", "Regex": r"^Training>.*Steps=(\d+),"}]

    metrics = parse_metrics(COACH_LOG, definitions)

    assert metrics == {"steps": [255.0, 290.0, 302.0], "steps/episode": [12.0, 13.0, 14.0]}


def test_lines_without_episode_numbers_give_no_episode_series():
    metrics = parse_metrics("Training> t , Total reward=3.0, Steps=1\n")

    assert metrics["reward-training"] == [3.0]
    assert "reward-training/episode" not in metrics


def test_table_summarises_training_and_evaluation():
    table = format_table(parse_metrics(COACH_LOG))

    rows = dict(line.rsplit(maxsplit=1) for line in table.splitlines())
    assert {label.strip(): value for label, value in rows.items()} == {
        "training episodes": "3",
        "first training reward": "21",
        "last training reward": "12",
        "best training reward": "35",
        "mean of last 3 training rewards": "22.67",
        "evaluations": "1",
        "best evaluation reward": "200",
    }


def test_table_explains_an_empty_log():
    assert "colours off" in format_table(parse_metrics("nothing here\n"))


def test_reward_curve_is_written_as_png(tmp_path):
    path = plot_reward_curve(parse_metrics(COACH_LOG), tmp_path / "plots" / "reward.png")

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5_000


def test_reward_curve_without_episode_numbers_still_plots(tmp_path):
    metrics = {"reward-training": [1.0, 2.0, 3.0], "reward-testing": []}

    assert plot_reward_curve(metrics, tmp_path / "r.png").stat().st_size > 0
