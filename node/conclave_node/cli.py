"""`conclave-node`: init, pull, status, report, rollback, serve, watch, probe.

Exit status (for scripts):
   0  success (pull: installed or already up to date; status: a current, unexpired set)
   1  unexpected error           2  bad command line
   3  not initialised / bad configuration or trust root
   4  server unreachable         5  unexpected server response
   6  nothing installed (status, rollback) or nothing to report
  10  signatures below threshold (wrong, revoked or missing keys; altered or mixed content)
  11  expired metadata (freeze: a stale set, even after a 304)
  12  rollback to an older set refused
  13  root rotation chain broken
  14  malformed metadata
  15  history fork: the audit history behind a new set does not extend the one
      this node witnessed (rewritten); the installed set stays in place
  20  tampered file (sha256 or CID mismatch)
  21  endless data (a source sent or announced more than the signed size)
  22  download failed on every source (partial bytes are kept and resumed next time)
  23  install failed           24  models failed to load or to answer a probe (serve, watch, probe)
  30  telemetry rejected         31  telemetry rate-limited
"""

import argparse
import json
import os
import sys
from pathlib import Path

from conclave_node.agent import NodeAgent
from conclave_node.errors import ExpiredMetadata, NodeError, NothingInstalled
from conclave_node.state import DEFAULT_HOME_ENV, NodeHome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conclave-node",
        description="Pull the approved model set from a Conclave platform, verified end to end, and report latency.",
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--home", type=Path, help=f"node folder (default ${DEFAULT_HOME_ENV} or ~/.conclave-node)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="trust a root and remember the server")
    init.add_argument("--server", required=True, help="platform base URL, e.g. https://conclave.example.org")
    init.add_argument("--trust-root", required=True, type=Path, help="root metadata obtained out of band")
    init.add_argument("--gateway", action="append", default=[], help="IPFS gateway base URL to try first (repeatable)")
    init.add_argument("--no-platform-gateway", action="store_true", help="download only from --gateway URLs")
    init.add_argument("--token", help="node API token for `report` (or set CONCLAVE_NODE_TOKEN)")
    init.add_argument("--models-dir", default="", help="where sets are installed (default <home>/models)")
    init.add_argument("--attempts", type=int, default=3, help="tries per source before moving on (resuming)")
    init.add_argument(
        "--min-rate",
        type=float,
        default=16384.0,
        help="bytes/s a source must keep up over each --rate-window, else the next source is tried",
    )
    init.add_argument("--rate-window", type=float, default=30.0, help="seconds over which the rate is measured")
    init.add_argument("--force", action="store_true", help="re-initialise: forget trusted versions and start over")

    commands.add_parser("pull", help="fetch, verify and install the current signed set")
    commands.add_parser("status", help="show what is installed and whether it is still valid")
    report = commands.add_parser("report", help="send latency summaries to the platform")
    report.add_argument("--file", type=Path, help="summary file (default <home>/telemetry/latency.json)")
    commands.add_parser("rollback", help="switch back to the previously installed set")

    serve = commands.add_parser(
        "serve", help="serve the installed set over HTTP (the platform's /embed, /generate, /v1/*)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8100, help="port (default 8100; 0 picks a free one)")
    serve.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the installed set (new set, new limits)",
    )
    serve.add_argument("--embed-max-inputs", type=int, default=256, help="most texts in one embedding request")
    serve.add_argument("--max-input-chars", type=int, default=32_000, help="longest text accepted")
    serve.add_argument(
        "--join",
        action="store_true",
        help="join the platform's rotation (node token from `init --token` or CONCLAVE_NODE_TOKEN) and heartbeat; "
        "inference routes then need the secret the node sends the platform",
    )
    serve.add_argument("--public-url", help="the URL the platform reaches this node at (default: where it listens)")
    serve.add_argument(
        "--secret-file",
        type=Path,
        help="file holding the bearer secret inference routes require (32-128 characters; "
        "with --join, the one announced instead of a fresh one)",
    )
    _runtime_arguments(serve)

    watch = commands.add_parser("watch", help="pull new sets as they are published, start them, roll back failures")
    watch.add_argument("--interval", type=float, default=60.0, help="seconds between checks (default 60)")
    watch.add_argument("--confirm", action="store_true", help="ask before installing a new set")
    watch.add_argument("--once", action="store_true", help="check once and exit")
    watch.add_argument("--probe-timeout", type=float, default=300.0, help="seconds the new models get to start")
    _runtime_arguments(watch)

    probe = commands.add_parser("probe", help="load an installed set's models and ask each one request")
    probe.add_argument("path", nargs="?", type=Path, help="set folder (default: the current set)")
    _runtime_arguments(probe)
    return parser


def _runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads per model call (default min(2, CPUs))"
    )
    parser.add_argument("--n-ctx", type=int, default=2048, help="context length of generative models (default 2048)")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="layers llama.cpp offloads to a GPU (-1: all)")
    parser.add_argument(
        "--embed-lanes",
        type=int,
        default=1,
        help="embedding batches run side by side, each on threads/lanes threads, a lone batch on all threads "
        "(default 1; more memory)",
    )


def _runtime_options(args):
    from conclave_node.loading import RuntimeOptions

    return RuntimeOptions(
        threads=args.threads, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, embed_lanes=args.embed_lanes
    )


def _secret_read(path: Path | None) -> str | None:
    from conclave_node.errors import ConfigError
    from conclave_node.federation import secret_check

    if path is None:
        return None
    try:
        return secret_check(path.read_text(), source=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc}") from exc


def _confirm(signed_set) -> bool:
    models = ", ".join(m.key for m in signed_set.manifests)
    try:
        answer = input(f"Install approved set v{signed_set.approved_set_version} ({models})? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = NodeHome(args.home)
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    agent = NodeAgent(home, progress=progress)
    try:
        if args.command == "init":
            result = agent.init(
                server=args.server,
                trust_root=args.trust_root,
                gateways=args.gateway,
                token=args.token or os.environ.get("CONCLAVE_NODE_TOKEN"),
                models_dir=args.models_dir,
                use_platform_gateway=not args.no_platform_gateway,
                attempts=args.attempts,
                min_rate_bytes_per_second=args.min_rate,
                rate_window_seconds=args.rate_window,
                force=args.force,
            )
            _print(
                args,
                result,
                f"initialised {result['home']}: server {result['server']}, trusting root v{result['root_version']}",
            )
            return 0
        if args.command == "pull":
            outcome = agent.pull()
            result = outcome.as_dict()
            if outcome.outcome == "installed":
                line = (
                    f"installed approved set v{outcome.approved_set_version} (signed v{outcome.signed_version}, "
                    f"expires {outcome.expires}): {len(outcome.models)} models, {outcome.downloaded_files} files "
                    f"downloaded ({outcome.downloaded_bytes:,} B), {outcome.reused_files} reused -> "
                    f"{outcome.installed_path}"
                )
            else:
                line = (
                    f"up to date: approved set v{outcome.approved_set_version} (signed v{outcome.signed_version}, "
                    f"expires {outcome.expires})"
                )
            for refusal in outcome.refusals:
                print(f"conclave-node: refused bytes from a source: {refusal}", file=sys.stderr)
            _print(args, result, line)
            return 0
        if args.command == "status":
            result = agent.status()
            _print(args, result, _status_text(result))
            if result["installed"] is None:
                return NothingInstalled.exit_code
            if result["expired"]:
                return ExpiredMetadata.exit_code
            return 0
        if args.command == "report":
            result = agent.report(args.file)
            _print(args, result, f"report {result['id']} accepted: {len(result['models'])} models")
            return 0
        if args.command == "rollback":
            result = agent.rollback()
            _print(args, result, f"rolled back to {result['current']['path']} (previous: {result['previous']['path']})")
            return 0
        if args.command == "serve":
            from conclave_node.serve import InputLimits, serve

            return serve(
                home,
                host=args.host,
                port=args.port,
                options=_runtime_options(args),
                inputs=InputLimits(embed_max_inputs=args.embed_max_inputs, max_input_chars=args.max_input_chars),
                reload_seconds=args.reload_interval,
                join=args.join,
                public_url=args.public_url,
                secret=_secret_read(args.secret_file),
            )
        if args.command == "watch":
            from conclave_node.watch import Watcher

            watcher = Watcher(
                agent,
                options=_runtime_options(args),
                confirm=_confirm if args.confirm else None,
                probe_timeout=args.probe_timeout,
            )
            return watcher.run(interval=args.interval, once=args.once)
        if args.command == "probe":
            return _probe(args, home)
    except NodeError as exc:
        if args.json:
            print(json.dumps({"error": {"kind": exc.kind, "message": exc.message, "exit_code": exc.exit_code}}))
        print(f"conclave-node: {exc.kind}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("conclave-node: interrupted; partial downloads are kept and resume on the next pull", file=sys.stderr)
        return 130
    return 2


def _probe(args, home: NodeHome) -> int:
    from conclave_node.loading import set_load
    from conclave_node.metadata import load_json, parse_root

    config = home.load_config()
    path = args.path or home.models_dir(config) / "current"
    root = parse_root(load_json(home.trusted_root_path.read_bytes(), what="trusted root"))
    served = set_load(path, root=root, options=_runtime_options(args))
    result = {
        "path": str(served.path),
        "approved_set_version": served.approved_set_version,
        "limits": served.limits.as_dict(),
        "models": [{"label": m.label, "kind": m.kind, "load_seconds": round(m.load_seconds, 3)} for m in served.models],
    }
    served.retire()
    _print(
        args,
        result,
        f"approved set v{served.approved_set_version} at {served.path}: "
        + ", ".join(f"{m['label']} answered" for m in result["models"]),
    )
    return 0


def _print(args, result: dict, line: str) -> None:
    print(json.dumps(result, indent=2, default=str) if args.json else line)


def _status_text(result: dict) -> str:
    lines = [
        f"home:      {result['home']}",
        f"server:    {result['server']}",
        f"root:      v{result['root_version']} (expires {result['root_expires']})",
    ]
    if result["signed_version"] is None:
        lines.append("set:       none pulled yet")
    else:
        state = "EXPIRED" if result["expired"] else "valid"
        lines.append(
            f"set:       approved set v{result['approved_set_version']}, signed v{result['signed_version']}, "
            f"expires {result['expires']} ({state})"
        )
        lines.append(f"models:    {', '.join(result['models']) or '-'}")
    witness = result.get("witness")
    if witness:
        checkpoint = witness.get("checkpoint_cid") or "none yet"
        lines.append(f"witnessed: audit event #{witness['seq']} {witness['hash']} (checkpoint {checkpoint})")
    else:
        lines.append("witnessed: no audit head yet")
    installed = result["installed"]
    lines.append(f"installed: {installed['path'] if installed else 'nothing'}")
    if result["previous"]:
        lines.append(f"previous:  {result['previous']['path']}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
