"""Resumable Coach training: each checkpoint holds the whole training state, and SIGTERM
stops training at a step boundary with a checkpoint, as a spot interruption needs.

Coach 1.0.1 checkpoints hold the online network's weights only. A job restarted from one
is a warm start: the step counter restarts, heat-up and the exploration schedule start
again, the replay buffer is empty, the target network and Adam's moments are fresh.
Patch 13 (graph_manager.py) calls this module instead:

- ``save`` writes, beside Coach's own files of checkpoint ``<id>_Step-<n>.ckpt``:
  ``.smrl-state.pkl`` (every network's weights, online, target and global; the optimisers'
  states and update counts; the step, episode and training counters of the graph, its
  levels, agents and environments; the exploration policy and the schedules of the
  algorithm; the RNGs of Python, numpy and the environment), ``.smrl-memory.pkl`` (the
  replay memory, unless it is over ``SMRL_CHECKPOINT_MEMORY_MB``) and, last,
  ``.smrl.json``: a manifest with the sha256 of every file of the checkpoint. Coach's
  ``.coach_checkpoint`` pointer is updated after it, so a checkpoint cut short by a kill
  is never the one pointed at.
- ``restore`` takes the newest checkpoint whose files match its manifest (a damaged one
  is named in the log, and the one before it used), loads it all, and logs what it restored.
- ``improve`` is Coach's improve loop, resumable: a restored job skips a finished
  heat-up, finishes the evaluation period it was in and stops where the interrupted job
  would have stopped (a checkpoint of a finished job: ``improve_steps`` more). On SIGTERM
  it stops at the end of the current episode (at the latest ``STOP_MID_EPISODE_AFTER_S``
  after the signal), saves a checkpoint and exits ``contract.STOPPED_EXIT_CODE``.

With the replay memory saved, a resumed run takes the same steps as one never stopped:
the same seed gives the same episodes and weights (tests/test_checkpoints.py).

MXNet must not be imported before fast_coach chooses its engine, and rl_coach imports this
module while it is being imported: both are imported inside the functions that use them.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import smrl_contract as contract
from smrl_coach.errors import LauncherError

STATE_SUFFIX = ".smrl-state.pkl"
MEMORY_SUFFIX = ".smrl-memory.pkl"
MANIFEST_SUFFIX = ".smrl.json"
FORMAT = 1
# A stop waits for the episode to end (the checkpoint then needs no environment state), but
# not longer than this: SageMaker kills the container 120 s after SIGTERM.
STOP_MID_EPISODE_AFTER_S = 10.0
# Replay memories are kept in the newest checkpoints only; older ones keep weights and state.
MEMORIES_KEPT = 2
DEFAULT_MEMORY_LIMIT_MB = 512
# Scalars that describe this process, not the training: never restored.
_NOT_RESTORED = re.compile(r"(^|_)time($|_)|^checkpoint_id$|^task_id$|^_?phase$")
_CHECKPOINT_NAME = re.compile(r"^(\d+)_Step-(\d+)\.ckpt$")


class CheckpointError(LauncherError):
    """No checkpoint in the folder can be restored; the message names each and why."""


class _Stop:
    requested_at: float | None = None


def request_stop(signum: int = signal.SIGTERM, frame: Any = None) -> None:
    """SIGTERM's handler: training stops at the next step boundary (see ``_stop_now``)."""
    if _Stop.requested_at is None:
        _Stop.requested_at = time.monotonic()
        print(f"Received signal {signum}: stopping at the end of this episode with a checkpoint.", flush=True)


def install_stop_handler() -> None:
    try:
        signal.signal(signal.SIGTERM, request_stop)
    except ValueError:  # not the main thread: Coach's own signal handling stays
        pass


# -- the state -----------------------------------------------------------------------------

@dataclass
class ResumePoint:
    """Where a restored job goes on: stage "heatup", "train" or "done", the stage's end as
    (step class name, absolute count), the TRAIN steps at which the job ends."""

    stage: str
    stage_end: tuple[str, int] | None
    improve_end: tuple[str, int] | None
    memory_restored: bool


def _scalars(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items()
            if isinstance(v, (bool, int, float, np.integer, np.floating)) and not _NOT_RESTORED.search(k)}


def _schedules(obj: Any) -> dict[str, Any]:
    from rl_coach.schedules import Schedule
    return {k: v for k, v in vars(obj).items() if isinstance(v, Schedule)} if obj is not None else {}


def _agents(gm: Any) -> dict[str, Any]:
    return {f"{level.name}/{name}": agent for level in gm.level_managers for name, agent in level.agents.items()}


def _stateful_objects(gm: Any) -> dict[str, Any]:
    """Every object whose scalar attributes are training state, by a stable name."""
    found: dict[str, Any] = {"graph": gm}
    for i, level in enumerate(gm.level_managers):
        found[f"level/{i}"] = level
    for i, env in enumerate(gm.environments):
        found[f"environment/{i}"] = env
    for name, agent in _agents(gm).items():
        found[f"agent/{name}"] = agent
        found[f"agent/{name}/exploration"] = agent.exploration_policy
        for owner, obj in (("exploration", agent.exploration_policy), ("algorithm", agent.ap.algorithm),
                           ("exploration-params", agent.ap.exploration)):
            for attr, schedule in _schedules(obj).items():
                found[f"agent/{name}/{owner}/{attr}"] = schedule
    return found


def _networks(gm: Any) -> dict[str, Any]:
    nets = {}
    for name, agent in _agents(gm).items():
        for wrapper_name, wrapper in agent.networks.items():
            for role in ("online", "target", "global"):
                arch = getattr(wrapper, f"{role}_network", None)
                if arch is not None and hasattr(arch, "model"):
                    nets[f"{name}/{wrapper_name}/{role}"] = arch
    return nets


def _env_layers(env: Any) -> list[Any]:
    layers, obj = [], getattr(env, "env", None)
    while obj is not None and obj not in layers:
        layers.append(obj)
        obj = getattr(obj, "env", None)
    return layers


_RNG_ATTRIBUTES = ("np_random", "_np_random", "_next_seed")


def _optimiser_state(arch: Any) -> dict[str, Any] | None:
    trainer = getattr(arch, "trainer", None)
    if trainer is None or not getattr(trainer, "_updaters", None):
        return None
    updater, opt = trainer._updaters[0], trainer._optimizer

    def arrays(state: Any) -> Any:
        if state is None:
            return None
        if isinstance(state, (tuple, list)):
            return [arrays(s) for s in state]
        return state.asnumpy()

    return {"type": type(opt).__name__, "num_update": opt.num_update,
            "counts": dict(opt._index_update_count),
            "states": {i: arrays(s) for i, s in updater.states.items()}}


def _restore_optimiser(arch: Any, saved: dict[str, Any]) -> int:
    import mxnet as mx
    trainer = arch.trainer
    updater, opt = trainer._updaters[0], trainer._optimizer
    if type(opt).__name__ != saved["type"]:
        raise CheckpointError(f"the checkpoint's optimiser is {saved['type']}, the preset's {type(opt).__name__}")
    params = trainer._params

    def assign(target: Any, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return type(target)(assign(t, v) for t, v in zip(target, value))
        target[:] = mx.nd.array(value, dtype=target.dtype)
        return target

    for index, value in saved["states"].items():
        if index not in updater.states:  # Adam creates its moments at the first update
            updater.states[index] = opt.create_state_multi_precision(index, params[index].data())
            updater.states_synced[index] = True
        updater.states[index] = assign(updater.states[index], value)
    opt.num_update = saved["num_update"]
    opt._index_update_count.clear()
    opt._index_update_count.update(saved["counts"])
    return max(saved["counts"].values(), default=0)


def capture(gm: Any, stage: str, stage_end: Any, improve_end: Any, finished: bool) -> dict[str, Any]:
    """Everything but the replay memory, as one picklable dict."""
    envs = {}
    for i, env in enumerate(gm.environments):
        envs[i] = [{a: getattr(layer, a) for a in _RNG_ATTRIBUTES if hasattr(layer, a)} for layer in _env_layers(env)]
    return {
        "format": FORMAT,
        "stage": stage, "stage_end": _step_tuple(stage_end), "improve_end": _step_tuple(improve_end),
        "finished": finished,
        "counters": {"total_steps_counters": gm.total_steps_counters},
        "scalars": {name: _scalars(obj) for name, obj in _stateful_objects(gm).items()},
        "weights": {name: {p: v.data().asnumpy() for p, v in arch.model.collect_params().items()}
                    for name, arch in _networks(gm).items()},
        "optimisers": {name: s for name, arch in _networks(gm).items() if (s := _optimiser_state(arch))},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "environments": envs},
    }


def _step_tuple(step: Any) -> tuple[str, int] | None:
    return None if step is None else (type(step).__name__, int(step.num_steps))


def _step(saved: tuple[str, int] | None) -> Any:
    from rl_coach import core_types
    return None if saved is None else getattr(core_types, saved[0])(saved[1])


def apply(gm: Any, state: dict[str, Any]) -> list[str]:
    """Loads a ``capture``d state into a freshly created graph; returns what it restored."""
    restored = []
    gm.total_steps_counters = state["counters"]["total_steps_counters"]
    objects = _stateful_objects(gm)
    for name, values in state["scalars"].items():
        if name in objects:
            for attr, value in values.items():
                setattr(objects[name], attr, value)
    restored.append("step, episode and training counters")
    networks = _networks(gm)
    for name, params in state["weights"].items():
        arch = networks.get(name)
        if arch is None:
            raise CheckpointError(f"the checkpoint has network {name}, the preset does not")
        live = arch.model.collect_params()
        for pname, value in params.items():
            live[pname].set_data(value)
    restored.append(f"weights of {', '.join(sorted(state['weights']))}")
    updates = [_restore_optimiser(networks[name], saved) for name, saved in state["optimisers"].items()]
    if updates:
        restored.append(f"optimiser state ({max(updates):,} updates)")
    schedules = {id(s): s for n, s in objects.items() if n.endswith("/epsilon_schedule")}  # often one, twice named
    epsilons = [f"{float(s.current_value):.4f}" for s in schedules.values()]
    restored.append(f"exploration (epsilon {', '.join(epsilons)})" if epsilons else "exploration state")
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    for i, layers in state["rng"]["environments"].items():
        for layer, values in zip(_env_layers(gm.environments[i]), layers):
            for attr, value in values.items():
                setattr(layer, attr, value)
    restored.append("random number generators")
    return restored


def _memory(agent: Any) -> Any:
    return getattr(agent, "memory", None)


def _memory_fields(memory: Any) -> dict[str, Any]:
    # Locks (Coach's and fast_coach's) and backends belong to this process.
    return {k: v for k, v in vars(memory).items() if "lock" not in type(v).__name__.lower()
            and "lock" not in k and k != "memory_backend"}


def memory_limit_bytes() -> int:
    value = os.environ.get(contract.CHECKPOINT_MEMORY_LIMIT_ENV, str(DEFAULT_MEMORY_LIMIT_MB))
    try:
        return int(float(value) * 1024 * 1024)
    except ValueError:
        raise LauncherError(f"{contract.CHECKPOINT_MEMORY_LIMIT_ENV}={value!r} is not a number of MB.") from None


# -- files ---------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _coach_files(directory: Path, name: str) -> list[Path]:
    """Coach's files of checkpoint `name` that a restore reads: the savers' (``<name>.<saver
    path>``) and the filters'. Not the ONNX exports: launchers move them out (the public
    sagemaker_rl one moves the last into /opt/ml/model), and no restore reads them."""
    return sorted(p for p in directory.glob(f"{name}.*") if p.is_file()
                  and not p.name.endswith((STATE_SUFFIX, MEMORY_SUFFIX, MANIFEST_SUFFIX, ".partial", ".onnx")))


def save(gm: Any, checkpoint_name: str, started: float) -> None:
    """Writes the training state of checkpoint `checkpoint_name` (Coach has written its own
    files) and its manifest; logs sizes and the time since `started` (``time.perf_counter()``
    when GraphManager.save_checkpoint, which calls this, began)."""
    directory = Path(gm.task_parameters.checkpoint_save_dir)
    stage, stage_end = getattr(gm, "smrl_stage", ("unknown", None))
    improve_end = getattr(gm, "smrl_improve_end", None)
    state = capture(gm, stage, stage_end, improve_end, finished=stage == "done")
    state_file = directory / (checkpoint_name + STATE_SUFFIX)
    _write_atomically(state_file, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    memory_note: dict[str, Any] = {"saved": False}
    memory_files = []
    memories = {name: _memory(agent) for name, agent in _agents(gm).items() if _memory(agent) is not None}
    if memories:
        limit = memory_limit_bytes()
        fields = {name: _memory_fields(m) for name, m in memories.items()}
        transitions = sum(m.num_transitions() for m in memories.values())
        data = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL) if limit > 0 else b""
        memory_note = {"saved": 0 < len(data) <= limit, "transitions": transitions, "bytes": len(data),
                       "limit_bytes": limit}
        if memory_note["saved"]:
            memory_file = directory / (checkpoint_name + MEMORY_SUFFIX)
            _write_atomically(memory_file, data)
            memory_files.append(memory_file)

    files = [*_coach_files(directory, checkpoint_name), state_file, *memory_files]
    counters = gm.total_steps_counters
    from rl_coach.core_types import EnvironmentEpisodes, EnvironmentSteps, RunPhase
    manifest = {
        "format": FORMAT, "checkpoint": checkpoint_name, "id": gm.checkpoint_id,
        "env_steps": counters[RunPhase.TRAIN][EnvironmentSteps],
        "episodes": counters[RunPhase.TRAIN][EnvironmentEpisodes],
        "heatup_steps": counters[RunPhase.HEATUP][EnvironmentSteps],
        "stage": stage, "finished": stage == "done", "memory": memory_note,
        "files": {p.name: _sha256(p) for p in files},
    }
    seconds = time.perf_counter() - started
    manifest["save_seconds"] = round(seconds, 4)
    _write_atomically(directory / (checkpoint_name + MANIFEST_SUFFIX), json.dumps(manifest, indent=1).encode())
    _prune_memories(directory)
    size = sum(p.stat().st_size for p in directory.glob(f"{checkpoint_name}.*") if not p.name.endswith(".partial"))
    memory_text = (f"replay memory {memory_note['transitions']:,} transitions {memory_note['bytes'] / 2**20:.2f} MB"
                   if memory_note.get("saved") else
                   f"replay memory NOT saved ({memory_note.get('transitions', 0):,} transitions, "
                   f"{memory_note.get('bytes', 0) / 2**20:.1f} MB over {contract.CHECKPOINT_MEMORY_LIMIT_ENV}="
                   f"{memory_note.get('limit_bytes', 0) / 2**20:g})" if memories else "no replay memory")
    print(f"{contract.CHECKPOINT_SAVED_LOG} {gm.checkpoint_id} at env step {manifest['env_steps']:,} ({stage}): "
          f"{size / 2**20:.2f} MB, {memory_text}, in {seconds:.3f} s", flush=True)


def manifests(directory: Path) -> list[dict[str, Any]]:
    """The manifests in `directory`, newest checkpoint first (unreadable ones as errors)."""
    found = []
    for path in directory.glob(f"*{MANIFEST_SUFFIX}"):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            manifest = {"checkpoint": path.name.removesuffix(MANIFEST_SUFFIX),
                        "error": f"unreadable manifest ({error})"}
        match = _CHECKPOINT_NAME.match(str(manifest.get("checkpoint", "")))
        manifest.setdefault("id", int(match.group(1)) if match else -1)
        found.append(manifest)
    return sorted(found, key=lambda m: m.get("id", -1), reverse=True)


def _damage(directory: Path, manifest: dict[str, Any]) -> str | None:
    if "error" in manifest:
        return manifest["error"]
    for name, digest in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} is damaged (its sha256 differs from the manifest's)"
    return None


def _prune_memories(directory: Path) -> None:
    for manifest in manifests(directory)[MEMORIES_KEPT:]:
        memory_file = directory / (str(manifest.get("checkpoint")) + MEMORY_SUFFIX)
        if memory_file.exists():
            memory_file.unlink()
            manifest["files"].pop(memory_file.name, None)
            manifest["memory"] = {**manifest.get("memory", {}), "saved": False, "pruned": True}
            _write_atomically(directory / (manifest["checkpoint"] + MANIFEST_SUFFIX),
                              json.dumps(manifest, indent=1).encode())


def warn_weights_only(checkpoint_path: str) -> None:
    """Coach restored a checkpoint that has no training state (saved by stock Coach)."""
    print(f"WARNING: restored only the online network's weights from {checkpoint_path}: that checkpoint holds "
          "no training state (it was not saved by this image), so step counters, heat-up, exploration, the "
          "target network, the optimiser and the replay memory start afresh.", flush=True)


def warn_unused_checkpoint_channel(gm: Any) -> None:
    """A `checkpoint` channel the entry point never hands to Coach would be ignored silently."""
    channel = contract.CHECKPOINT_CHANNEL_DIR
    if getattr(gm.task_parameters, "checkpoint_restore_path", None) or not channel.is_dir() \
            or not any(channel.iterdir()):
        return
    print(f"WARNING: a '{contract.CHECKPOINT_CHANNEL}' input channel is mounted at {channel}, but this entry point "
          "passes no checkpoint_restore_dir to Coach, so training starts from scratch. To resume from it, set "
          f"args.checkpoint_restore_dir = '{channel}' in your launcher's get_config_args(), or use "
          "smrl_coach.launcher.SageMakerCoachPresetLauncher, which does.", flush=True)


def holds_training_state(directory: str | os.PathLike | None) -> bool:
    return bool(directory) and Path(directory).is_dir() and any(Path(directory).glob(f"*{MANIFEST_SUFFIX}"))


def restore(gm: Any, directory: str | os.PathLike) -> None:
    """Restores the newest intact checkpoint in `directory` into `gm` (created, not yet run).

    Raises:
        CheckpointError: no checkpoint there is intact; the message names each one's damage.
    """
    directory = Path(directory)
    problems = []
    for manifest in manifests(directory):
        damage = _damage(directory, manifest)
        if damage:
            problems.append(f"checkpoint {manifest['checkpoint']}: {damage}")
            print(f"WARNING: {problems[-1]}; trying the one before it.", flush=True)
            continue
        _restore_checkpoint(gm, directory, manifest)
        return
    raise CheckpointError(
        f"No checkpoint in {directory} can be restored: {'; '.join(problems) or 'none found'}. "
        "Nothing was trained from scratch instead. Remove the damaged files (or the whole folder, "
        "to start afresh) and run the job again.")


def _restore_checkpoint(gm: Any, directory: Path, manifest: dict[str, Any]) -> None:
    from rl_coach.logger import screen
    name = manifest["checkpoint"]
    screen.log_title(f"Loading checkpoint: {directory / name}")  # Coach's own line, which users' tools read
    gm.checkpoint_saver.restore(gm.sess, str(directory / name))
    for level in gm.level_managers:
        level.restore_checkpoint(str(directory))
    with open(directory / (name + STATE_SUFFIX), "rb") as f:
        state = pickle.load(f)
    restored = apply(gm, state)
    memory_restored = False
    memory_file = directory / (name + MEMORY_SUFFIX)
    if memory_file.is_file():
        with open(memory_file, "rb") as f:
            fields = pickle.load(f)
        agents = _agents(gm)
        for agent_name, values in fields.items():
            vars(_memory(agents[agent_name])).update(values)
        transitions = sum(_memory(agents[a]).num_transitions() for a in fields)
        restored.append(f"replay memory ({transitions:,} transitions)")
        memory_restored = True
    elif _agents(gm) and any(_memory(a) is not None for a in _agents(gm).values()):
        restored.append("no replay memory (not saved in this checkpoint: heat-up refills it)")
    gm.checkpoint_id = int(manifest["id"]) + 1
    finished = bool(state["finished"])
    gm.smrl_resume = ResumePoint(
        stage="done" if finished else state["stage"], stage_end=state["stage_end"],
        improve_end=None if finished else state["improve_end"], memory_restored=memory_restored)
    where = "a finished job: training goes on for improve_steps more" if finished else f"stage {state['stage']}"
    print(f"{contract.RESUMED_LOG} {name} in {directory} at env step {manifest['env_steps']:,}, "
          f"episode {manifest['episodes']:,} ({where}): restored {'; '.join(restored)}.", flush=True)


# -- the resumable improve loop ------------------------------------------------------------

def _stop_now(gm: Any) -> bool:
    if _Stop.requested_at is None:
        return False
    return gm.reset_required or time.monotonic() - _Stop.requested_at >= STOP_MID_EPISODE_AFTER_S


def _stop(gm: Any) -> None:
    from rl_coach.core_types import EnvironmentSteps, RunPhase
    gm.save_checkpoint()
    steps = gm.total_steps_counters[RunPhase.TRAIN][EnvironmentSteps]
    where = "at the end of an episode" if gm.reset_required else "mid-episode (the resumed job starts a new one)"
    print(f"{contract.STOPPED_LOG} at env step {steps:,} {where}, {time.monotonic() - _Stop.requested_at:.1f} s "
          f"after the signal; checkpoint saved in {gm.task_parameters.checkpoint_save_dir}.", flush=True)
    raise SystemExit(contract.STOPPED_EXIT_CODE)


def _heatup(gm: Any, count_end: Any) -> None:
    from rl_coach.core_types import EnvironmentEpisodes, RunPhase
    from rl_coach.logger import screen
    with gm.phase_context(RunPhase.HEATUP):
        if not gm.current_step_counter < count_end:  # stopped right at its end: no reset (it draws)
            return
        screen.log_title(f"{gm.name}: Starting heatup")
        gm.reset_internal_state(force_environment_reset=True)
        gm.smrl_stage = ("heatup", count_end)
        while gm.current_step_counter < count_end:
            gm.act(EnvironmentEpisodes(1))
            if _stop_now(gm):
                _stop(gm)


def _train_and_act(gm: Any, period_end: Any | None, steps: Any) -> None:
    from rl_coach.core_types import EnvironmentSteps, RunPhase

    from smrl_coach import fast_coach
    fast_coach.freeze_long_lived_objects()
    with gm.phase_context(RunPhase.TRAIN):
        count_end = period_end if period_end is not None else gm.current_step_counter + steps
        if not gm.current_step_counter < count_end:  # stopped right at the period's end: no reset (it draws)
            return
        gm.reset_internal_state(force_environment_reset=True)
        gm.smrl_stage = ("train", count_end)
        while gm.current_step_counter < count_end:
            gm.act(EnvironmentSteps(1))
            gm.train()
            gm.occasionally_save_checkpoint()
            if _stop_now(gm):
                _stop(gm)


def improve(gm: Any) -> None:
    """Coach's GraphManager.improve (heat-up, then act/train periods each followed by an
    evaluation, then a final checkpoint), resumable from ``gm.smrl_resume`` and stoppable by SIGTERM."""
    from rl_coach.core_types import RunPhase
    from rl_coach.logger import screen
    gm.verify_graph_was_created()
    install_stop_handler()
    resume: ResumePoint | None = getattr(gm, "smrl_resume", None)
    if resume is None:
        warn_unused_checkpoint_channel(gm)
        gm.sync()  # target (and online) networks start as copies; a restored job has its own
    with gm.phase_context(RunPhase.HEATUP):
        heatup_end = gm.current_step_counter + gm.heatup_steps
    if resume is not None and resume.stage == "heatup":
        heatup_end = _step(resume.stage_end)
    heatup_done = resume is not None and resume.stage not in ("heatup", "unknown") and resume.memory_restored
    if gm.heatup_steps.num_steps > 0 and not heatup_done:
        if resume is not None and resume.stage != "heatup":  # the memory was not saved: refill it
            with gm.phase_context(RunPhase.HEATUP):
                heatup_end = gm.current_step_counter + gm.heatup_steps
        _heatup(gm, heatup_end)

    screen.log_title(f"Starting to improve {gm.name}")
    improve_end = _step(resume.improve_end) if resume is not None and resume.improve_end else None
    if improve_end is None:
        improve_end = gm.total_steps_counters[RunPhase.TRAIN] + gm.improve_steps
    gm.smrl_improve_end = improve_end
    period_end = _step(resume.stage_end) if resume is not None and resume.stage == "train" else None
    while gm.total_steps_counters[RunPhase.TRAIN] < improve_end:
        _train_and_act(gm, period_end, gm.steps_between_evaluation_periods)
        period_end = None
        if gm.evaluate(gm.evaluation_steps):
            break
    gm.smrl_stage = ("done", None)
    if gm.task_parameters.checkpoint_save_dir:
        gm.save_checkpoint()
