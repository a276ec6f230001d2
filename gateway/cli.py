"""The `celgate` command: serve | models | chat | route | policy check|test | costs | keys new.

Errors a user can fix print one clear message and exit 2; nothing prints a stack trace.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import grpc

from gateway.config import ConfigError, load_config
from gateway.errors import GatewayError
from gateway.levels import Level
from gateway.scrub import install_log_scrubbing, scrub_url
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2

DEFAULT_CONFIG = os.environ.get("CELGATE_CONFIG", "config/celgate.yaml")
DEFAULT_TARGET = os.environ.get("CELGATE_TARGET", "127.0.0.1:50051")


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import serve
    from gateway.workers import is_worker, supervise

    config = load_config(args.config)
    if config.server.workers > 1 and not is_worker():
        return supervise(Path(args.config), config.server.workers)
    asyncio.run(serve(config, Path(args.config)))
    return 0


def _policy(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.policy import run_check, run_test

    if args.policy_command == "replay":
        return _replay(args, out)

    run = run_check if args.policy_command == "check" else run_test
    return run(Path(args.dir), out, [Path(p) for p in args.descriptors])


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.policy.replay import ReplayError, Window, parse_share, parse_when, run_replay

    try:
        window = Window(
            since=parse_when(args.since, "--since") if args.since else None,
            until=parse_when(args.until, "--until") if args.until else None,
            tenant=args.tenant,
        )
        max_cost = args.max_cost_increase
        max_changed = args.max_changed
        return run_replay(
            Path(args.dir),
            Path(args.decisions),
            load_config(args.config),
            out,
            window=window,
            output_format=args.format,
            max_cost_increase=parse_share(max_cost, "--max-cost-increase") if max_cost else None,
            max_changed=parse_share(max_changed, "--max-changed") if max_changed else None,
        )
    except ReplayError as exc:
        sys.stderr.write(f"celgate: {exc}\n")
        return 2


def _costs(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.budget.report import run_costs

    return run_costs(load_config(args.config), args.since, args.by, out)


def _keys(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.keys import run_keys_new

    return run_keys_new(args.tenant, out)


def _models(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    rows = [("ALIAS", "PROVIDER", "UPSTREAM MODEL", "LOCATION", "CLEARANCE", "BASE URL")]
    for alias, m in config.models.items():
        url = scrub_url(m.base_url)  # proxy credentials are not for the terminal
        rows.append((alias, m.provider, m.upstream_model, m.location, m.clearance.name, url))
    _table(rows, out)
    return 0


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _chat_request(args: argparse.Namespace) -> pb.ChatStreamRequest:
    request = pb.ChatStreamRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=args.prompt)],
        preferred_model=args.model or "",
    )
    if args.classification:
        request.classification = Level.parse(args.classification).proto()
    return request


def _describe_route(route: pb.RouteInfo, out: TextIO) -> None:
    out.write(
        f"model={route.model} provider={route.provider} upstream={route.upstream_model} "
        f"location={policy_pb2.Location.Name(route.location)} rule={route.rule} "
        f"classification={policy_pb2.Classification.Name(route.classification)} "
        f"cost_usd={route.cost_usd:.6f}\n"
    )


def _explain(response: pb.RouteResponse, healthy: dict[str, bool], out: TextIO) -> None:
    """The dry run, as a person reads it: where it goes, why, and what was detected."""
    _describe_route(response.route, out)
    context = response.context
    out.write(
        f"  task_type={policy_pb2.TaskType.Name(context.task_type)} "
        f"complexity={context.complexity:.2f} "
        f"estimated_input_tokens={context.estimated_input_tokens} "
        f"policy={response.route.policy_name}@{response.route.policy_revision}\n"
    )
    for finding in response.findings:
        level = policy_pb2.Classification.Name(finding.level)
        out.write(f"  detected {finding.detector} x{finding.count} ({level})\n")
    for candidate in response.candidates:
        if not candidate.allowed:
            state = f"dropped: {candidate.reason}"
        elif healthy.get(candidate.model, False):
            state = "ok"
        else:
            state = "skipped at dispatch: unhealthy (no API key, or circuit open)"
        out.write(f"  candidate {candidate.model}: {state}\n")


def _call(args: argparse.Namespace, out: TextIO) -> int:
    with grpc.insecure_channel(args.target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            if args.command == "route":
                # The request messages share field numbers, so the bytes translate 1:1.
                route_request = pb.RouteRequest.FromString(_chat_request(args).SerializeToString())
                response = stub.Route(route_request, timeout=args.timeout)
                catalogue = stub.ListModels(pb.ListModelsRequest(), timeout=args.timeout)
                _explain(response, {m.alias: m.healthy for m in catalogue.models}, out)
                return 0
            stream = stub.ChatStream(_chat_request(args), timeout=args.timeout)
            for part in stream:
                out.write(part.content_delta)
                out.flush()
                if part.HasField("route"):
                    out.write("\n")
                    _describe_route(part.route, out)
            return 0
        except grpc.RpcError as exc:
            sys.stderr.write(f"celgate: {exc.code().name}: {exc.details()}\n")
            return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celgate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG)

    models = sub.add_parser("models", help="list the model catalogue")
    models.add_argument("--config", default=DEFAULT_CONFIG)

    policy = sub.add_parser("policy", help="compile or test routing policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    for name, text in (
        ("check", "compile every policy under DIR; exit 1 on any error"),
        ("test", "compile and run every policy's tests.yaml under DIR, with rule coverage"),
    ):
        cmd = policy_sub.add_parser(name, help=text)
        cmd.add_argument("dir", nargs="?", default="policies", metavar="DIR")
        cmd.add_argument(
            "--descriptors",
            action="append",
            default=[],
            metavar="PATH",
            help="message types for suites with a config.yaml: a FileDescriptorSet, a .proto "
            "file or a folder of .proto files (repeatable)",
        )
    replay = policy_sub.add_parser(
        "replay",
        help="re-decide recorded requests with the policy in DIR and compare, with the cost",
    )
    replay.add_argument("dir", metavar="DIR", help="the candidate policy folder")
    replay.add_argument("--decisions", required=True, metavar="FILE", help="a decision log")
    replay.add_argument("--config", default=DEFAULT_CONFIG, help="catalogue, tenants, prices")
    replay.add_argument("--since", help="first request time, ISO date or time (UTC)")
    replay.add_argument("--until", help="end of the window (exclusive), ISO date or time (UTC)")
    replay.add_argument("--tenant", help="only this tenant's requests")
    replay.add_argument("--format", default="text", choices=["text", "json"])
    replay.add_argument(
        "--max-cost-increase", metavar="PCT", help="exit 1 when the cost rises more, e.g. 10%%"
    )
    replay.add_argument(
        "--max-changed", metavar="PCT", help="exit 1 when more decisions change, e.g. 5%%"
    )

    costs = sub.add_parser("costs", help="print spend from the budget ledger")
    costs.add_argument("--config", default=DEFAULT_CONFIG)
    costs.add_argument("--since", help="ISO date or time (UTC), for example 2026-11-01")
    costs.add_argument(
        "--by",
        default="tenant",
        metavar="{tenant,model,task_type,label:KEY}",
        help="group by tenant, model, task type, or a promoted request label (label:project)",
    )

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="print a fresh API key once, and the config line")
    new.add_argument("--tenant", required=True)

    for name, text in (
        ("chat", "send one chat to a running gateway and stream the answer"),
        ("route", "show which model a prompt would go to, without calling it"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("prompt")
        cmd.add_argument("--target", default=DEFAULT_TARGET, help="gateway host:port")
        cmd.add_argument("--model", help="preferred model alias")
        cmd.add_argument(
            "--classification", choices=["public", "internal", "confidential", "restricted"]
        )
        cmd.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    return parser


def quiet_http_clients() -> None:
    """The HTTP client libraries log one INFO line per upstream call; the decision log is the
    record of a request, so they speak at INFO only when the gateway logs at DEBUG."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("CELGATE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Every log line, the HTTP client's included, loses URL credentials (proxy passwords).
    install_log_scrubbing()
    quiet_http_clients()
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "models":
            return _models(args, sys.stdout)
        if args.command == "policy":
            return _policy(args, sys.stdout)
        if args.command == "costs":
            return _costs(args, sys.stdout)
        if args.command == "keys":
            return _keys(args, sys.stdout)
        return _call(args, sys.stdout)
    except ConfigError as exc:
        sys.stderr.write(f"celgate: {exc}\n")
        return 2
    except (GatewayError, OSError) as exc:
        # Start-up failures a person can act on (port taken, Redis down): no stack trace.
        sys.stderr.write(f"celgate: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
