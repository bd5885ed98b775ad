"""`conclave-verify` over a large history: time and peak memory, against the server's `audit_verify`.

    .venv/bin/python bench/verify_history.py                                  # 10,000 proposals, 1,000,000 votes
    .venv/bin/python bench/verify_history.py --proposals 1000 --votes 100     # a smaller run
    .venv/bin/python bench/verify_history.py --server-side                    # also load it and run audit_verify

Synthesises a valid history in the exact event shapes the services write
(proposal created with frozen rules, opened, one vote per voter with every
tenth voter replacing theirs, closed with its tally, queued, a parameter
change and the execution), ten proposals open at a time with their votes
interleaved, hash-chained with the platform's own hashing. It is written
as exported pages (`conclave_node.auditchain.page_document`) and a
checkpoint into a CAR, and `conclave-verify --car` runs on it in a child
process: wall time and peak RSS (`ru_maxrss`). With `--server-side` the
same events are bulk-loaded into a throwaway SQLite database (or
DATABASE_URL's server, database `conclave_bench_verify`) and `manage.py
audit_verify` is timed the same way.
"""

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from aleph_cid import compute_cid, write_folder_car  # noqa: E402

from conclave_node.auditchain import (  # noqa: E402
    GENESIS_HASH,
    canonical_timestamp,
    checkpoint_document,
    page_document,
    record_hash,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
RULES = {
    "voting_delay_seconds": 0,
    "voting_period_seconds": 604800,
    "quorum": "0.2000",
    "approval_threshold": "0.5000",
    "timelock_seconds": 86400,
    "grace_period_seconds": 604800,
}
CONCURRENT = 10


def history(proposals: int, votes: int):
    """Event records (without seq/prev_hash/hash), in chain order."""
    clock = [T0]

    def at() -> str:
        clock[0] += dt.timedelta(microseconds=137)
        return canonical_timestamp(clock[0])

    def event(event_type, actor, object_type, object_id, payload):
        return {
            "event_type": event_type,
            "actor": actor,
            "object_type": object_type,
            "object_id": str(object_id),
            "payload": payload,
            "created_at": at(),
        }

    current: dict[str, int] = {}
    ends_of: dict[int, str] = {}
    starts_of: dict[int, str] = {}
    eligible = votes
    required = -(-eligible * 2 // 10)  # ceil(0.2 x eligible)
    for first in range(1, proposals + 1, CONCURRENT):
        batch = list(range(first, min(first + CONCURRENT, proposals + 1)))
        for pid in batch:
            starts = T0 + dt.timedelta(days=pid)
            ends = starts + dt.timedelta(seconds=RULES["voting_period_seconds"])
            eta = ends + dt.timedelta(seconds=RULES["timelock_seconds"])
            ends_of[pid] = ends.isoformat()
            starts_of[pid] = starts.isoformat()
            base = {"proposal_type": "parameter-change"}
            yield event(
                "proposal.created",
                "author",
                "proposal",
                pid,
                {
                    **base,
                    "title": f"Proposal {pid}",
                    "subject": f"parameter:p{pid % CONCURRENT}",
                    "payload": {"parameter": f"p{pid % CONCURRENT}", "value": pid, "reason": "bench"},
                    "rules": RULES,
                    "checks": [],
                    "eligible_voters": eligible,
                    "quorum_votes_required": required,
                    "voting_starts_at": starts.isoformat(),
                    "voting_ends_at": ends.isoformat(),
                    "execution_eta": eta.isoformat(),
                    "expires_at": (eta + dt.timedelta(seconds=RULES["grace_period_seconds"])).isoformat(),
                },
            )
            yield event("proposal.opened", "system", "proposal", pid, {**base, "voting_starts_at": starts.isoformat()})
        choices = {pid: {} for pid in batch}
        for voter_index in range(votes):
            voter = f"voter{voter_index}"
            for pid in batch:
                choice = ("for", "for", "against", "abstain")[(voter_index + pid) % 4]
                choices[pid][voter] = choice
                yield event(
                    "vote.cast",
                    voter,
                    "proposal",
                    pid,
                    {
                        "proposal_type": "parameter-change",
                        "voter": voter,
                        "choice": choice,
                        "reason": "",
                        "cast_at": starts_of[pid],
                    },
                )
                if voter_index % 10 == 0:
                    previous, choice = choice, "for"
                    choices[pid][voter] = choice
                    yield event(
                        "vote.changed",
                        voter,
                        "proposal",
                        pid,
                        {
                            "proposal_type": "parameter-change",
                            "voter": voter,
                            "choice": choice,
                            "previous_choice": previous,
                            "reason": "changed my mind",
                            "cast_at": starts_of[pid],
                        },
                    )
        for pid in batch:
            counts = {c: sum(1 for v in choices[pid].values() if v == c) for c in ("for", "against", "abstain")}
            quorum_votes = counts["for"] + counts["abstain"]
            decided = counts["for"] + counts["against"]
            passed = quorum_votes >= required and counts["for"] * 10000 > 5000 * decided
            tally = {
                **counts,
                "total": sum(counts.values()),
                "eligible_voters": eligible,
                "turnout": 1.0,
                "quorum_votes": quorum_votes,
                "quorum_votes_required": required,
                "quorum_reached": quorum_votes >= required,
                "approval": round(counts["for"] / decided, 4) if decided else None,
                "approval_threshold": 0.5,
                "approval_reached": counts["for"] * 10000 > 5000 * decided,
                "passed": passed,
            }
            base = {"proposal_type": "parameter-change"}
            yield event(
                "proposal.closed",
                "system",
                "proposal",
                pid,
                {
                    **base,
                    "voting_ends_at": ends_of.pop(pid),
                    "outcome": "passed" if passed else "defeated",
                    "tally": tally,
                },
            )
            if passed:
                name = f"p{pid % CONCURRENT}"
                yield event("proposal.queued", "system", "proposal", pid, {**base})
                old = current.get(name, 4)
                current[name] = pid
                yield event(
                    "parameter.changed",
                    "system",
                    "parameter",
                    name,
                    {"parameter": name, "old_value": old, "new_value": pid, "proposal_id": pid},
                )
                yield event(
                    "proposal.executed",
                    "system",
                    "proposal",
                    pid,
                    {**base, "result": {"parameter": name, "old_value": old, "new_value": pid}},
                )


def chained(records):
    previous = GENESIS_HASH
    for seq, record in enumerate(records, start=1):
        record["seq"], record["prev_hash"] = seq, previous
        record["hash"] = previous = record_hash(record)
        yield record


def write_car(folder: Path, car: Path, proposals: int, votes: int, page_events: int) -> tuple[int, str]:
    pages = folder / "pages"
    pages.mkdir(parents=True)
    previous, batch, last = None, [], None
    count = 0

    def flush():
        nonlocal previous
        data = page_document(events=batch, previous=previous)
        (pages / f"{batch[0]['seq']:012d}.json").write_bytes(data)
        previous = compute_cid(data)

    for record in chained(history(proposals, votes)):
        batch.append(record)
        last = record
        count += 1
        if len(batch) == page_events:
            flush()
            batch = []
    if batch:
        flush()
    checkpoint = checkpoint_document(
        seq=last["seq"], digest=last["hash"], created_at=dt.datetime.fromisoformat(last["created_at"]), log=previous
    )
    (folder / "checkpoint.json").write_bytes(checkpoint)
    write_folder_car(folder, car, cid_version=0, follow_symlinks=False)
    return count, compute_cid(checkpoint)


# Runs a script or module and reports its own peak RSS (KiB) on exit.
_MEASURE = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "sys.argv = sys.argv[1:]\n"
    "if sys.argv[0].endswith('.py'): runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "else: runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def timed(target: list[str], env: dict | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS MiB, its last line of output) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *target], capture_output=True, text=True, env=env, cwd=REPO_ROOT
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = next((int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS ")), 0)
    lines = [line for line in (done.stdout + done.stderr).strip().splitlines() if not line.startswith("MAXRSS ")]
    return wall, cpu, peak // 1024, f"exit {done.returncode}: {lines[-1] if lines else ''}"


def load_and_audit_verify(car_folder: Path, proposals: int, votes: int) -> tuple[float, float, int, str]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=car_folder))
    env = {
        **os.environ,
        "CONCLAVE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "conclave.settings",
        "SECRET_KEY": "bench-only",
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], check=True, env=env, cwd=REPO_ROOT)
    loader = (
        "import django, sys, json; django.setup()\n"
        "sys.path.insert(0, 'bench')\n"
        "from verify_history import chained, history\n"
        "from conclave_node.auditchain import parse_event_time\n"
        "from audit.models import AuditEvent, AuditChainHead\n"
        "rows, last = [], None\n"
        "for r in chained(history(int(sys.argv[1]), int(sys.argv[2]))):\n"
        "    rows.append(AuditEvent(seq=r['seq'], event_type=r['event_type'], actor_label=r['actor'],\n"
        "        object_type=r['object_type'], object_id=r['object_id'], payload=r['payload'],\n"
        "        created_at=parse_event_time(r['created_at']), prev_hash=r['prev_hash'], hash=r['hash']))\n"
        "    last = r\n"
        "    if len(rows) == 5000: AuditEvent.objects.bulk_create(rows); rows = []\n"
        "AuditEvent.objects.bulk_create(rows)\n"
        "AuditChainHead.objects.update_or_create(id=1, defaults={'last_seq': last['seq'], 'last_hash': last['hash']})\n"
    )
    subprocess.run([python, "-c", loader, str(proposals), str(votes)], check=True, env=env, cwd=REPO_ROOT)
    return timed(["manage.py", "audit_verify"], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proposals", type=int, default=10_000)
    parser.add_argument(
        "--votes", type=int, default=100, help="voters per proposal (each votes once; every tenth replaces)"
    )
    parser.add_argument("--page-events", type=int, default=1000)
    parser.add_argument("--server-side", action="store_true", help="also bulk-load the events and time audit_verify")
    parser.add_argument("--keep", type=Path, help="write the CAR here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        work = Path(tmp)
        car = args.keep or work / "history.car"
        started = time.perf_counter()
        events, checkpoint = write_car(work / "history", car, args.proposals, args.votes, args.page_events)
        built = time.perf_counter() - started
        replaced = args.proposals * ((args.votes + 9) // 10)
        print(
            f"history: {args.proposals:,} proposals, {args.proposals * args.votes:,} votes + {replaced:,} "
            f"replacements, {events:,} events; CAR {car.stat().st_size / 2**20:,.0f} MiB built in {built:,.1f} s; "
            f"checkpoint {checkpoint}"
        )
        verifier = ["conclave_node.verify", "--car", str(car)]
        wall, cpu, rss, last = timed(verifier)
        print(
            f"| conclave-verify --car | {wall:,.1f} s | {cpu:,.1f} s CPU | {rss:,} MiB peak RSS | {events / wall:,.0f} "
            f"events/s | {last} |"
        )
        if args.server_side:
            wall, cpu, rss, last = load_and_audit_verify(work, args.proposals, args.votes)
            print(
                f"| manage.py audit_verify | {wall:,.1f} s | {cpu:,.1f} s CPU | {rss:,} MiB peak RSS | "
                f"{events / wall:,.0f} events/s | {last} |"
            )


if __name__ == "__main__":
    main()
