"""`smrl-local`: build the images, train, serve and pre-flight, on this machine, with no AWS account.

Each command imports what it runs when it runs: the SageMaker SDK, matplotlib and
gymnasium take 3 s to import, and `smrl-local --help` or `smrl-local engine` answer in
0.3 s without them. These are the package's only imports inside functions besides
``emulator.__getattr__``; none of them hides a cycle (tests/test_architecture.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from typing import Any, NoReturn

from emulator import engine, ownership, signals
from emulator.errors import UserError
from emulator.inputs import INTERRUPT_AFTER_ENV, InputError, check_port, check_steps, parse_interrupt_plan
from emulator.preflight import DEFAULT_SMOKE_STEPS
from emulator.progress import quiet
from emulator.resources import DEFAULT_PRESET

# Commands that start containers: they sweep first, and turn SIGINT, SIGTERM and SIGHUP
# into a cleanup (emulator.signals), even when started with SIGINT ignored.
STARTS_CONTAINERS = {"train", "serve", "run", "preflight"}


def _hyperparameter(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE, got {text!r} (e.g. rl.agent_params.algorithm.discount=0.95)")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _environment_variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r} (e.g. SMRL_COACH_FAST=0)")
    return name, value


class _Parser(argparse.ArgumentParser):
    """argparse's parser with each error on one line (argparse prints the usage first); exits 2 as argparse does."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message.rstrip('.')}. See `{self.prog} --help`.\n")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _port(text: str) -> int:
    try:
        return check_port(_whole_number(text), name="") or 0
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _steps(text: str) -> int:
    try:
        return check_steps(_whole_number(text), name="") or 0
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(text: str) -> int:
    number = _whole_number(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative: pass 0 or more")
    return number


def _interrupt_plan(text: str) -> list[float]:
    try:
        return parse_interrupt_plan(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cmd_engine(args: argparse.Namespace) -> int:
    return engine.ensure()


def _cmd_build(args: argparse.Namespace) -> int:
    from emulator.images import IMAGES, build_image

    kinds = list(IMAGES) if args.image == "all" else [args.image]
    for variant in args.variant:
        for kind in kinds:
            build_image(kind, variant, force=args.force)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from emulator import metrics
    from emulator.training import train

    result = train(
        args.preset,
        source_dir=args.source_dir,
        hyperparameters=dict(args.hyperparameter or []),
        steps=args.steps,
        environment=dict(args.env or []),
        output_dir=args.output,
        instance_type=args.instance_type,
        build=not args.no_build,
        interrupt_after=args.interrupt_after,
        resume=args.resume,
    )
    print()
    print(metrics.format_table(result.metrics))
    print()
    print(f"training wall time: {result.seconds:.1f} s")
    print(f"model:        {result.model_data}")
    print(f"output:       {result.output_data}")
    print(f"log:          {result.log_file}")
    print(f"checkpoints:  {result.checkpoints}")
    if result.reward_curve:
        print(f"reward curve: {result.reward_curve}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from emulator.endpoints import check_gym_env, check_inference_code, checked_model, endpoint, run_episodes
    from emulator.inputs import check_output_folder
    from emulator.serving import watch
    from emulator.training import newest_model

    check_inference_code(args.entry_point, args.source_dir)
    if args.episodes:
        check_gym_env(args.gym_env)
    model = checked_model(args.model or newest_model(check_output_folder(args.output, "--output")))
    print(f"serving {model}")
    with endpoint(model, entry_point=args.entry_point, source_dir=args.source_dir, port=args.port) as predictor:
        print(f"endpoint ready: {predictor.url}  (POST {predictor.url}/invocations, GET {predictor.url}/ping)")
        print("try: curl -s -H 'Content-Type: application/json' -d '[0.0, 0.1, 0.0, -0.1]' "
              f"{predictor.url}/invocations")
        if args.episodes:
            rewards = run_episodes(predictor, args.episodes, env_id=args.gym_env)
            print(f"{args.episodes} {args.gym_env} episodes driven by the endpoint: rewards "
                  f"{', '.join(f'{r:.0f}' for r in rewards)}; mean {sum(rewards) / len(rewards):.1f}")
        if args.no_wait:
            return 0
        print("serving until Ctrl-C", flush=True)
        watch(predictor.endpoint_name)  # raises EndpointError (one line, exit 1) once /ping stops answering
    return 0


def _cmd_preflight(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emulator import jobspec
    from emulator.preflight import notebook
    from emulator.preflight.report import format_report
    from emulator.preflight.runner import run

    log = quiet if args.json else print
    if Path(args.job).suffix == ".ipynb":
        if args.static_only:
            raise jobspec.JobSpecError("--static-only: a notebook's jobs are known only by running it; drop the flag.")
        if not args.json:
            print(f"pre-flight of {Path(args.job).resolve()} (every cell, training shrunk to {args.steps} steps)")
        report = notebook.run(args.job, steps=args.steps, log=log)
    else:
        spec = jobspec.load(args.job)
        if not args.json:
            print(f"pre-flight of {spec.path}")
        report = run(spec, steps=args.steps, static_only=args.static_only, log=log)
    print(report.to_json() if args.json else "\n" + format_report(report))
    return 0 if report.ok else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from emulator.run import parse_param, run

    params = dict(parse_param(text) for text in args.param or [])
    drill = {INTERRUPT_AFTER_ENV: ",".join(f"{s:g}" for s in args.interrupt_after)} if args.interrupt_after else {}
    result = run(args.path, params, output_dir=args.output, verbose=args.verbose, environment=drill)
    print(f"ran {result.path.name} in {result.seconds:.1f} s"
          + (f"; executed notebook: {result.executed_copy}" if result.executed_copy else ""))
    return 0


def _cmd_ps(args: argparse.Namespace) -> int:
    from emulator.resources import work_dir
    from emulator.sweep import format_running, running

    client = engine.require_engine()
    try:
        print(format_running(running(client, work_dir())))
    finally:
        client.close()
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from emulator.images import remove_dangling_images
    from emulator.ownership import ALIVE
    from emulator.resources import work_dir
    from emulator.sweep import running, sweep

    client = engine.require_engine()
    try:
        if not sweep(client, work_dir(), log=print):
            print("nothing left by processes that died")
        live = [row for row in running(client, work_dir()) if row.state == ALIVE]
        if live:
            print(f"kept {len(live)} container(s) or server(s) of running processes (see `smrl-local ps`)")
        if args.images:
            remove_dangling_images(client, log=print)
    finally:
        client.close()
    return 0


def _sweep_first() -> None:
    """What processes that died left (their containers, temp folders, servers) goes before
    a command starts more; one line per dead owner on stderr."""
    from emulator.resources import work_dir
    from emulator.sweep import sweep

    try:
        client = engine.require_engine()
    except engine.EngineError:
        return  # the command itself says what is missing
    try:
        sweep(client, work_dir(), log=lambda line: print(f"smrl-local: {line}", file=sys.stderr))
    finally:
        client.close()


def _cmd_s3_ls(args: argparse.Namespace) -> int:
    from datetime import datetime

    from emulator.resources import work_dir
    from emulator.s3 import list_objects

    for uri, size, modified in list_objects(work_dir() / "s3", args.uri):
        print(f"{datetime.fromtimestamp(modified):%Y-%m-%d %H:%M:%S} {size:>12,} {uri}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smrl-local",
        description="SageMaker RL (Coach + MXNet) on this machine: local images, local mode, no AWS.",
    )
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show the SageMaker SDK's INFO log, and the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    engine = commands.add_parser("engine", help="check the Docker engine and compose; start/install them if possible")
    engine.set_defaults(run=_cmd_engine)

    build = commands.add_parser("build", help="build the images (seconds when nothing changed)")
    build.add_argument("--image", choices=["training", "inference", "all"], default="training",
                       help="which image (default: %(default)s)")
    build.add_argument("--variant", choices=["cpu", "gpu"], action="append",
                       help="image variant; repeat for both (default: cpu)")
    build.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    build.set_defaults(run=_cmd_build)

    train = commands.add_parser("train", help="train a preset with RLEstimator(...).fit() in local mode")
    train.add_argument("--preset", default=DEFAULT_PRESET,
                       help="a preset's name in --source-dir, or the path of a preset .py file (default: %(default)s)")
    train.add_argument("--source-dir", help="folder of your preset and env module (default: the project's presets/); "
                       "without a train_coach.py of its own, the image's Coach launcher runs the preset")
    train.add_argument("--hyperparameter", "-p", metavar="NAME=VALUE", type=_hyperparameter, action="append",
                       help="extra hyperparameter, e.g. -p rl.agent_params.algorithm.discount=0.95 "
                            "or -p rl.evaluation_steps:EnvironmentEpisodes=5 (repeatable)")
    train.add_argument("--steps", type=_steps,
                       help="training budget in environment steps, > 0 (overrides the preset's improve_steps)")
    train.add_argument("--env", metavar="NAME=VALUE", type=_environment_variable, action="append",
                       help="environment variable for the training container, e.g. --env SMRL_COACH_FAST=0 "
                            "(stock Coach) (repeatable)")
    train.add_argument("--output", default="output",
                       help="output folder; each job gets a subfolder (default: %(default)s)")
    train.add_argument("--instance-type", default="local", choices=["local", "local_gpu"],
                       help="(default: %(default)s)")
    train.add_argument("--no-build", action="store_true", help="do not build the image first")
    train.add_argument("--interrupt-after", metavar="SECONDS[,SECONDS...]", type=_interrupt_plan,
                       help="spot-interruption drill: stop the job that many seconds into each attempt "
                            "(SIGTERM, SIGKILL 120 s later) and restart it from its checkpoints")
    train.add_argument("--resume", metavar="JOB|latest",
                       help="start from the checkpoints of a job under --output: an interrupted one goes on "
                            "to its end, a finished one trains --steps more")
    train.set_defaults(run=_cmd_train)

    serve = commands.add_parser("serve", help="serve a trained model on 127.0.0.1 with the SageMaker endpoint contract")
    serve.add_argument("--model", help="model.tar.gz to serve (default: the newest under --output)")
    serve.add_argument("--output", default="output", help="where `train` wrote its jobs (default: %(default)s)")
    serve.add_argument("--port", type=_port,
                       help="port on 127.0.0.1, 1-65535 (default: 8080, or a free one when taken; 0: a free one)")
    serve.add_argument("--entry-point",
                       help="inference script (model_fn/input_fn/predict_fn/output_fn or transform_fn)")
    serve.add_argument("--source-dir", help="folder holding the inference script")
    serve.add_argument("--episodes", type=_count, default=5,
                       help="CartPole episodes to drive with the endpoint first (default: %(default)s)")
    serve.add_argument("--gym-env", default="CartPole-v0",
                       help="gymnasium environment for those episodes (default: %(default)s)")
    serve.add_argument("--no-wait", action="store_true",
                       help="remove the endpoint after the episodes instead of serving until Ctrl-C")
    serve.set_defaults(run=_cmd_serve)

    run = commands.add_parser("run", help="run a SageMaker script or notebook written for the cloud, unchanged, "
                                          "on this machine (local S3, local jobs and endpoints)")
    run.add_argument("path", help="a .py script or an .ipynb notebook")
    run.add_argument("--param", metavar="NAME=VALUE", action="append",
                     help="a variable for the code, e.g. --param steps=1000 (repeatable)")
    run.add_argument("--output", default="output", help="where a notebook's executed copy goes (default: %(default)s)")
    run.add_argument("--interrupt-after", metavar="SECONDS[,SECONDS...]", type=_interrupt_plan,
                     help="spot-interruption drill for every training job the script runs (as train's)")
    run.set_defaults(run=_cmd_run)

    s3 = commands.add_parser("s3", help="what runs wrote to the local S3 (plain files under the work folder)")
    s3_commands = s3.add_subparsers(dest="s3_command", required=True)
    s3_ls = s3_commands.add_parser("ls", help="list objects: smrl-local s3 ls s3://BUCKET[/PREFIX]")
    s3_ls.add_argument("uri")
    s3_ls.set_defaults(run=_cmd_s3_ls)

    check = commands.add_parser("preflight", help="prove a SageMaker RL job works here before sending it to the cloud")
    check.add_argument("job", help="job description: a .py file that builds the RLEstimator, or .yaml/.toml; "
                       "or a notebook (.ipynb), run in full with its training shrunk")
    check.add_argument("--steps", type=_steps, default=DEFAULT_SMOKE_STEPS,
                       help="environment steps of the smoke training run, > 0 (default: %(default)s)")
    check.add_argument("--static-only", action="store_true", help="only the checks that run no training job")
    check.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    check.set_defaults(run=_cmd_preflight)

    ps = commands.add_parser("ps", help="what runs now (containers, endpoints, servers) and which process owns it")
    ps.set_defaults(run=_cmd_ps)

    clean = commands.add_parser("clean", help="remove what processes that died left behind (containers, temp "
                                              "folders, servers, networks); never what a running one holds")
    clean.add_argument("--images", action="store_true",
                       help="also remove the dangling <none> images our image builds left, and say how much it freed")
    clean.set_defaults(run=_cmd_clean)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # The SDK logs the whole compose file and each step at INFO; train.log has the job's output.
        logging.getLogger("sagemaker").setLevel(logging.WARNING)
    if getattr(args, "variant", "unset") is None:
        args.variant = ["cpu"]
    ownership.set_program(f"smrl-local {args.command}")
    try:
        if args.command not in STARTS_CONTAINERS:
            return args.run(args)
        with signals.handled():
            _sweep_first()
            try:
                return args.run(args)
            except KeyboardInterrupt:
                _sweep_first()  # what the command's own children (a script, a kernel) left
                raise
    except signals.Interrupted as stop:
        said = str(stop) or "its containers are removed."
        print(f"smrl-local: stopped by {stop.signal_name}; {said}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as error:
        # Anything else is a bug in this tool: Python prints its traceback.
        if args.verbose:
            traceback.print_exc()
        print(f"smrl-local: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
