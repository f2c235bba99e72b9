"""``gyre``: the data scientist's command line.

``gyre train`` calls the trainer's gRPC ``SubmitTraining`` (not the Kafka topic): the caller gets
validation errors at once (INVALID_ARGUMENT), the job id to follow, and needs no broker address.
The trainer turns the call into the same job a ``training.requests`` event would create, so both
paths share idempotency on the request id: re-running with the same ``--request-id`` never trains
twice.

Environment: ``GYRE_TRAINER_ADDRESS`` (host:port of the trainer's gRPC API, default
``127.0.0.1:7301``) and ``GYRE_TOKEN`` (bearer token, when the trainer requires one).

``gyre dlq list|show|replay`` looks at and replays dead letters on the Kafka broker
(:mod:`gyre_cli.dlq` has its environment and exit codes).

Exit codes: 0 queued (or, with ``--wait``, succeeded); 1 the job failed; 2 bad arguments or the
trainer refused the request; 3 the trainer could not be reached or ``--wait`` timed out.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format

from gyre_cli import dlq
from gyre_contracts.gyre.events.v1 import events_pb2 as ev
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2 as pb
from gyre_contracts.gyre.trainer.v1 import trainer_service_pb2_grpc as pb_grpc

DEFAULT_TRAINER = "127.0.0.1:7301"
_ENDED = {ev.TRAINING_STATUS_SUCCEEDED, ev.TRAINING_STATUS_FAILED}


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; a time without offset is read as UTC. Raises ``argparse.ArgumentTypeError``."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gyre``."""
    parser = argparse.ArgumentParser(prog="gyre", description="Gyre MLOps platform command line.")
    parser.add_argument("--trainer", default=os.environ.get("GYRE_TRAINER_ADDRESS", DEFAULT_TRAINER),
                        help="host:port of the trainer's gRPC API (env GYRE_TRAINER_ADDRESS)")
    parser.add_argument("--token", default=os.environ.get("GYRE_TOKEN"),
                        help="bearer token (env GYRE_TOKEN); needed when the trainer requires one")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per gRPC call (default 10)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="ask the trainer for a new version of a model")
    train.add_argument("--model", required=True, help="registered model name")
    train.add_argument("--feature-view", required=True, help="feature view the training set is built from")
    train.add_argument("--label", required=True, help="label column (a feature of the view)")
    train.add_argument("--start", type=parse_time, help="window start, ISO 8601, inclusive (UTC if no offset)")
    train.add_argument("--end", type=parse_time, help="window end, ISO 8601, exclusive (UTC if no offset)")
    train.add_argument("--max-evals", type=int, default=0, help="trials of the search (0: trainer default)")
    train.add_argument("--families", default="",
                       help="comma-separated estimator families (default: AutoML over all)")
    train.add_argument("--objective", default="", help="metric to optimise, e.g. roc_auc (default per task)")
    train.add_argument("--backend", default="", choices=["", "sklearn", "torch-text"],
                       help="sklearn (AutoML over estimator families) or torch-text (fine-tune a pretrained text "
                            "encoder with a new head); default: the model's current backend, else sklearn")
    train.add_argument("--text-feature", default="",
                       help="torch-text: the text feature the model reads (default: the view's only text feature)")
    train.add_argument("--seed", type=int, default=0, help="seed of the search and holdout (0: trainer default)")
    train.add_argument("--promote-to", default="production",
                       help="alias the registry's promotion policy may give the new version (default: production)")
    train.add_argument("--no-promote", dest="promote_to", action="store_const", const="",
                       help="register the new version without running the promotion policy")
    train.add_argument("--request-id", default="", help="idempotency key (default: a new UUID)")
    train.add_argument("--wait", action="store_true", help="wait until the job ends and print its outcome")
    train.add_argument("--wait-timeout", type=float, default=3600.0, help="longest --wait in seconds")

    job = commands.add_parser("job", help="show one training job")
    job.add_argument("job_id", help="job id (as printed by `gyre train`)")

    dlq.add_parser(commands)
    return parser


def training_request(args: argparse.Namespace) -> ev.TrainingRequest:
    """The TrainingRequest that ``gyre train`` arguments describe."""
    request = ev.TrainingRequest(
        request_id=args.request_id or str(uuid.uuid4()),
        model_name=args.model,
        feature_view=args.feature_view,
        label=args.label,
        reason=ev.TRAINING_REASON_MANUAL,
        requested_by=_user(),
        promote_to_alias=args.promote_to,
        backend=args.backend,
        text_feature=args.text_feature,
    )
    request.requested_at.FromDatetime(datetime.now(UTC))
    if args.start is not None:
        request.window_start.FromDatetime(args.start)
    if args.end is not None:
        request.window_end.FromDatetime(args.end)
    request.search.max_evals = args.max_evals
    request.search.random_seed = args.seed
    request.search.objective_metric = args.objective
    request.search.estimator_families.extend(f.strip() for f in args.families.split(",") if f.strip())
    return request


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "gyre-cli"


def _print_job(job: pb.TrainingJob, **extra: object) -> None:
    body = json_format.MessageToDict(job, preserving_proto_field_name=True)
    print(json.dumps({**extra, "job": body}, indent=2, sort_keys=True))


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``gyre`` with ``argv``; the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dlq":
        return dlq.run(args)
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    with grpc.insecure_channel(args.trainer) as channel:
        stub = pb_grpc.TrainerServiceStub(channel)
        try:
            if args.command == "job":
                response = stub.GetTrainingJob(pb.GetTrainingJobRequest(job_id=args.job_id), timeout=args.timeout,
                                               metadata=metadata)
                _print_job(response.job)
                return 1 if response.job.status == ev.TRAINING_STATUS_FAILED else 0
            submitted = stub.SubmitTraining(pb.SubmitTrainingRequest(request=training_request(args)),
                                            timeout=args.timeout, metadata=metadata)
            job = submitted.job
            if not args.wait:
                _print_job(job, duplicate=submitted.duplicate)
                return 0
            deadline = time.monotonic() + args.wait_timeout
            while job.status not in _ENDED:
                if time.monotonic() > deadline:
                    print(f"gyre: job {job.job_id} did not end within {args.wait_timeout:.0f}s", file=sys.stderr)
                    return 3
                time.sleep(1.0)
                job = stub.GetTrainingJob(pb.GetTrainingJobRequest(job_id=job.job_id), timeout=args.timeout,
                                          metadata=metadata).job
            _print_job(job, duplicate=submitted.duplicate)
            return 0 if job.status == ev.TRAINING_STATUS_SUCCEEDED else 1
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
            print(f"gyre: {code.name}: {details}", file=sys.stderr)
            transient = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return 3 if transient else 2


def main() -> None:
    """Console entry point ``gyre``."""
    sys.exit(run())
