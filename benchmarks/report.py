"""The benchmark report: one row per figure, CPU and GPU side by side, each against its reference.

A figure's value is what the benchmark recorded in extra_info (the in-container rate
for per-step figures, the host-measured seconds for end-to-end ones), the median over
its rounds. Each figure may name a reference in the same table: a ceiling (the raw
environment under a rollout), the plain Gluon step of the DQN network, stock Coach
under the fast path, or a baseline (`docker run` under `fit()`); the last column is
value / reference.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANTS = ("cpu", "gpu")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str          # "steps/s" or "s"
    reference: str | None = None
    reference_kind: str = ""  # ceiling, "relative to", "speed-up over" or baseline


def _rollouts() -> list[Figure]:
    figures = []
    for envs in (1, 8, 64):
        raw = f"rollout-raw-{envs}"
        figures.append(Figure(raw, f"CartPole raw env, {envs} env{'s' if envs > 1 else ''}", "env steps/s"))
        figures.append(Figure(f"rollout-policy-{envs}", f"policy rollout, {envs} env{'s' if envs > 1 else ''}",
                              "env steps/s", raw, "ceiling"))
    return figures


# The table's rows, in order. Tests record values under these keys.
FIGURES: list[Figure] = [
    *_rollouts(),
    Figure("gluon-hybridised", "bare MXNet DQN step, hybridised", "grad steps/s"),
    Figure("gluon-imperative", "bare MXNet DQN step, imperative", "grad steps/s", "gluon-hybridised", "relative to"),
    Figure("coach-gradient-stock", "stock Coach DQN training, gradient steps", "grad steps/s", "gluon-hybridised",
           "relative to"),
    Figure("coach-env-stock", "stock Coach DQN training, env steps", "env steps/s", "rollout-raw-1", "ceiling"),
    Figure("coach-gradient", "Coach DQN training (image's fast path), gradient steps", "grad steps/s",
           "coach-gradient-stock", "speed-up over"),
    Figure("coach-env", "Coach DQN training (image's fast path), env steps", "env steps/s", "coach-env-stock",
           "speed-up over"),
    Figure("coach-heatup", "Coach DQN heat-up (random actions), env steps", "env steps/s", "rollout-raw-1", "ceiling"),
    Figure("coach-ppo-gradient-stock", "stock Coach clipped PPO, gradient steps", "grad steps/s"),
    Figure("coach-ppo-env-stock", "stock Coach clipped PPO, env steps", "env steps/s"),
    Figure("coach-ppo-gradient", "Coach clipped PPO (image's fast path), gradient steps", "grad steps/s",
           "coach-ppo-gradient-stock", "speed-up over"),
    Figure("coach-ppo-env", "Coach clipped PPO (image's fast path), env steps", "env steps/s", "coach-ppo-env-stock",
           "speed-up over"),
    Figure("dqn-solved-steps-stock", "stock Coach DQN: env steps to first evaluation >= 150 (median, 5 seeds)",
           "env steps"),
    Figure("dqn-solved-steps", "Coach DQN (fast path): env steps to first evaluation >= 150 (median, 5 seeds)",
           "env steps", "dqn-solved-steps-stock", "relative to"),
    Figure("dqn-train-seconds-stock", "stock Coach DQN: training time of the preset's 10k steps (median)", "s"),
    Figure("dqn-train-seconds", "Coach DQN (fast path): training time of the preset's 10k steps (median)", "s",
           "dqn-train-seconds-stock", "relative to"),
    Figure("docker-run-noop", "`docker run` of a no-op", "s"),
    Figure("fit-noop", "`fit()` of a no-op (local mode)", "s", "docker-run-noop", "baseline"),
    Figure("deploy-docker-run", "serving image: `docker run serve` -> first /ping 200", "s"),
    Figure("deploy-endpoint", "serving image: emulator endpoint deploy -> ready", "s", "deploy-docker-run", "baseline"),
    Figure("predict-http-p50", "predict latency p50: plain HTTP, keep-alive", "ms"),
    Figure("predict-sdk-p50", "predict latency p50: SDK predictor, emulator session", "ms", "predict-http-p50", "baseline"),
    Figure("predict-sdk-p99", "predict latency p99: SDK predictor, emulator session", "ms"),
    Figure("predict-stock-p50", "predict latency p50: SDK predictor, stock local mode", "ms", "predict-sdk-p50", "baseline"),
    Figure("requests-per-second", "requests/s, 4 concurrent keep-alive clients", "req/s"),
    Figure("s3-start", "local S3 (rclone serve s3, on the host): start -> accepting", "s"),
    Figure("s3-put-50mb", "local S3: put of a 50 MB object (boto3)", "s"),
    Figure("s3-get-50mb", "local S3: get of a 50 MB object (boto3)", "s"),
    Figure("drill-plain", "DQN 10k steps (seed 1), straight through: `train()` wall time", "s"),
    Figure("drill-twice", "the same job interrupted twice by the drill (same steps, same evaluations)", "s",
           "drill-plain", "baseline"),
    Figure("drill-lost", "time lost per interruption (stop, new container, restore)", "s"),
    Figure("checkpoint-save-dqn", "DQN checkpoint save, whole training state (median per save)", "ms"),
    Figure("checkpoint-size-dqn", "DQN checkpoint at the end of 10k steps (12k transitions in replay memory)", "MB"),
    Figure("checkpoint-save-ppo", "clipped PPO checkpoint save, whole training state (median per save)", "ms"),
    Figure("checkpoint-size-ppo", "clipped PPO checkpoint (median per save)", "MB"),
    Figure("archive-check-model", "model archive check (host): a trained CartPole policy's model.tar.gz", "ms"),
    Figure("archive-check-bomb", "model archive check (host): 5.5 GB of zeros in one member, 5 MB packed, refused",
           "ms"),
    Figure("archive-check-bomb-split", "model archive check (host): 5.5 GB of zeros in 55 members, refused by the ratio",
           "s"),
]
BY_KEY = {figure.key: figure for figure in FIGURES}


@dataclass
class Result:
    """All rounds of one figure on one image variant."""

    figure: str
    variant: str
    values: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.values)


def _number(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def rows(results: list[Result]) -> list[list[str]]:
    """The table's cells: figure, unit, CPU, GPU, GPU/CPU, reference, value/reference."""
    found = {(r.figure, r.variant): r for r in results}
    table = []
    for figure in FIGURES:
        by_variant = {v: found.get((figure.key, v)) for v in VARIANTS}
        if not any(by_variant.values()):
            continue
        cpu, gpu = by_variant["cpu"], by_variant["gpu"]
        cells = [figure.label, figure.unit,
                 _number(cpu.value, figure.unit) if cpu else "n/a",
                 _number(gpu.value, figure.unit) if gpu else "n/a",
                 f"{gpu.value / cpu.value:.2f}" if cpu and gpu else "n/a"]
        reference = found.get((figure.reference, "cpu")) if figure.reference else None
        if figure.reference:
            ref_label = f"{figure.reference_kind}: {BY_KEY[figure.reference].label}"
            cells += [ref_label, f"{cpu.value / reference.value:.3g}" if cpu and reference else "n/a"]
        else:
            cells += ["", ""]
        table.append(cells)
    return table


HEADER = ["figure", "unit", "CPU image", "GPU image", "GPU/CPU", "reference (CPU)", "CPU ÷ ref"]


def render_text(results: list[Result]) -> str:
    body = rows(results)
    widths = [max(len(row[i]) for row in [HEADER, *body]) for i in range(len(HEADER))]
    numeric = {2, 3, 4, 6}

    def line(row: list[str]) -> str:
        return "  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, body)])


def render_markdown(results: list[Result], context: list[str]) -> str:
    body = rows(results)
    lines = ["# sagemaker-rl-local benchmarks", "", *context, "",
             "| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---", "---", "--:", "--:", "--:", "---", "--:"]) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def context_lines(results: list[Result]) -> list[str]:
    """What the figures were measured with: image, MXNet build, threads (from extra_info)."""
    seen: dict[str, dict[str, Any]] = {}
    for result in results:
        info = result.info
        # Prefer the threads measured in a container over an end-to-end figure's "image default".
        if info.get("image") and (info["image"] not in seen or seen[info["image"]].get("threads") == "image default"):
            seen[info["image"]] = info
    return [f"- `{image}`: {info.get('variant')}, MXNet {info.get('mxnet_version', '?')}, "
            f"threads {info.get('threads', '?')}" for image, info in seen.items()]


def write_markdown(path: Path, results: list[Result]) -> None:
    path.write_text(render_markdown(results, context_lines(results)))
