"""`conclave-node`: init, pull, status, report, rollback.

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
  23  install failed
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
    init.add_argument("--min-rate", type=float, default=16384.0,
                      help="bytes/s a source must keep up over each --rate-window, else the next source is tried")
    init.add_argument("--rate-window", type=float, default=30.0, help="seconds over which the rate is measured")
    init.add_argument("--force", action="store_true", help="re-initialise: forget trusted versions and start over")

    commands.add_parser("pull", help="fetch, verify and install the current signed set")
    commands.add_parser("status", help="show what is installed and whether it is still valid")
    report = commands.add_parser("report", help="send latency summaries to the platform")
    report.add_argument("--file", type=Path, help="summary file (default <home>/telemetry/latency.json)")
    commands.add_parser("rollback", help="switch back to the previously installed set")
    return parser


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
            _print(args, result, f"initialised {result['home']}: server {result['server']}, trusting root v{result['root_version']}")
            return 0
        if args.command == "pull":
            outcome = agent.pull()
            result = outcome.as_dict()
            if outcome.outcome == "installed":
                line = (
                    f"installed approved set v{outcome.approved_set_version} (signed v{outcome.signed_version}, "
                    f"expires {outcome.expires}): {len(outcome.models)} models, {outcome.downloaded_files} files "
                    f"downloaded ({outcome.downloaded_bytes:,} B), {outcome.reused_files} reused -> {outcome.installed_path}"
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
    except NodeError as exc:
        if args.json:
            print(json.dumps({"error": {"kind": exc.kind, "message": exc.message, "exit_code": exc.exit_code}}))
        print(f"conclave-node: {exc.kind}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("conclave-node: interrupted; partial downloads are kept and resume on the next pull", file=sys.stderr)
        return 130
    return 2


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
