"""Governance tallies on PostgreSQL: one proposal with 100,000 votes, and 10,000 proposals listed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/governance_tally.py

Creates (and drops first) its own database, `conclave_bench_governance`, on
the server DATABASE_URL names; rows are bulk-inserted with INSERT ... SELECT
generate_series, so set-up takes seconds. Measures, in one run:

* the tally of one proposal with 100,000 votes: the one aggregate query
  (`proposal_tally`) against loading every vote into Python and counting;
* the annotated state + tally of that one proposal (`proposal_get`);
* listing 10,000 proposals (100,000 more votes) with their state and tally:
  the selector at page sizes 10 to 1,000, a state filter (evaluated over all
  rows), and GET /api/v1/proposals/ in-process, each with its query count,
  which must not grow with the page size.

Prints a markdown table (median of --repeat runs, milliseconds).
"""

import argparse
import os
import statistics
import time
from collections import Counter

from _common import django_setup, postgres_database_fresh

BENCH_DB = "conclave_bench_governance"
VOTERS = 100_000
PROPOSALS = 10_000
VOTES_PER_LISTED_PROPOSAL = 10


def timed(function, repeat: int) -> tuple[float, int, object]:
    """Median milliseconds over `repeat` runs, the query count of one run, and its result."""
    from django.db import connection

    # An execute wrapper, not CaptureQueriesContext: a request through the test
    # client resets Django's query log when it starts.
    queries: list[str] = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        result = function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(queries), result


def _sql(statement: str, params: list | None = None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def seed_voters() -> None:
    from django.contrib.auth.models import Group

    group, _ = Group.objects.get_or_create(name="contributor")
    _sql(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
        " is_active, date_joined) SELECT '!', false, 'voter-' || g, '', '', '', false, true, now()"
        " FROM generate_series(1, %s) AS g",
        [VOTERS],
    )
    _sql(
        "INSERT INTO auth_user_groups (user_id, group_id) SELECT id, %s FROM auth_user WHERE username LIKE 'voter-%%'",
        [group.pk],
    )


def seed_big_proposal():
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from governance.models import ProposalType
    from governance.services import proposal_create

    author = get_user_model().objects.get(username="voter-1")
    proposal = proposal_create(
        author=author,
        proposal_type=ProposalType.PARAMETER_CHANGE,
        title="One proposal, 100,000 votes",
        payload={"parameter": "queue_size", "value": 8, "reason": "benchmark"},
        now=timezone.now(),
    )
    _sql(
        "INSERT INTO governance_vote (proposal_id, voter_id, choice, reason, cast_at, changes)"
        " SELECT %s, id, (ARRAY['for','against','abstain'])[1 + (id %% 3)], '', now(), 0"
        " FROM auth_user WHERE username LIKE 'voter-%%'",
        [proposal.pk],
    )
    return proposal


def seed_many_proposals(template) -> None:
    """Clone the template proposal 10,000 times, half of them already closed, with 10 votes each."""
    from governance.models import Proposal

    columns = [
        f.column
        for f in Proposal._meta.concrete_fields
        if f.column
        not in (
            "id",
            "title",
            "subject",
            "created_at",
            "voting_starts_at",
            "voting_ends_at",
            "execution_eta",
            "expires_at",
        )
    ]
    column_list = ", ".join(columns)
    _sql(
        f"INSERT INTO governance_proposal ({column_list}, title, subject, created_at, voting_starts_at, voting_ends_at,"
        " execution_eta, expires_at)"
        f" SELECT {column_list}, 'listed ' || g, 'bench:' || g,"
        " created_at - (g %% 2) * interval '30 days', voting_starts_at - (g %% 2) * interval '30 days',"
        " voting_ends_at - (g %% 2) * interval '30 days', execution_eta - (g %% 2) * interval '30 days',"
        " expires_at - (g %% 2) * interval '30 days'"
        " FROM governance_proposal, generate_series(1, %s) AS g WHERE id = %s",
        [PROPOSALS, template.pk],
    )
    _sql(
        "INSERT INTO governance_vote (proposal_id, voter_id, choice, reason, cast_at, changes)"
        " SELECT p.id, u.id, (ARRAY['for','against','abstain'])[1 + ((p.id + k) %% 3)], '', now(), 0"
        " FROM governance_proposal p CROSS JOIN generate_series(0, %s) AS k"
        " JOIN auth_user u ON u.username = 'voter-' || (1 + (p.id * 7 + k) %% %s)"
        " WHERE p.subject LIKE 'bench:%%'",
        [VOTES_PER_LISTED_PROPOSAL - 1, VOTERS],
    )
    _sql("VACUUM ANALYZE")


def record_outcomes(now) -> None:
    """What the beat does at each close, in one statement: record the outcome of every ended proposal."""
    _sql(
        "UPDATE governance_proposal p SET closed_at = p.voting_ends_at, outcome = CASE WHEN"
        " t.f + t.ab >= p.quorum_votes_required AND t.f * 10000 > p.approval_threshold_bp * (t.f + t.ag)"
        " THEN 'passed' ELSE 'defeated' END"
        " FROM (SELECT proposal_id, count(*) FILTER (WHERE choice = 'for') AS f,"
        " count(*) FILTER (WHERE choice = 'against') AS ag, count(*) FILTER (WHERE choice = 'abstain') AS ab"
        " FROM governance_vote GROUP BY proposal_id) t"
        " WHERE t.proposal_id = p.id AND p.voting_ends_at <= %s AND p.closed_at IS NULL",
        [now],
    )
    _sql("VACUUM ANALYZE governance_proposal")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/postgres")
    django_setup(postgres_database_fresh(url, BENCH_DB, why="this benchmark is about its query plans"))

    from django.core.paginator import Paginator
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from governance.models import Vote
    from governance.selectors import proposal_get, proposal_list, proposal_tally

    _sql("SET jit = off")  # as recommended for this workload; the last row shows JIT on
    start = time.perf_counter()
    seed_voters()
    big = seed_big_proposal()
    seed_many_proposals(big)
    seeded = time.perf_counter() - start
    rows: list[tuple[str, float, int, str]] = []

    def python_count():
        return Counter(Vote.objects.filter(proposal_id=big.pk).values_list("choice", flat=True))

    ms, queries, tally = timed(lambda: proposal_tally(big), args.repeat)
    rows.append(
        (
            "tally of 1 proposal, 100,000 votes: `proposal_tally` (one aggregate)",
            ms,
            queries,
            f"for {tally.votes_for}, against {tally.votes_against}, abstain {tally.votes_abstain}",
        )
    )
    baseline_ms, baseline_queries, counted = timed(python_count, max(3, args.repeat // 3))
    assert counted == Counter({"for": tally.votes_for, "against": tally.votes_against, "abstain": tally.votes_abstain})
    rows.append(
        (
            "same, loading every vote into Python and counting (baseline)",
            baseline_ms,
            baseline_queries,
            f"{baseline_ms / ms:.0f}× slower than the aggregate",
        )
    )
    now = timezone.now()
    ms, queries, annotated = timed(lambda: proposal_get(big.pk, now=now), args.repeat)
    rows.append(("state + tally of that proposal: `proposal_get` (annotated)", ms, queries, f"state {annotated.state}"))

    total = proposal_list(now=now).count()
    for size in (10, 50, 200, 1000):

        def page(size=size):
            return [(p.state, p.votes_for) for p in Paginator(proposal_list(now=now), size).page(1).object_list]

        ms, queries, _ = timed(page, args.repeat)
        rows.append((f"list {total:,} proposals, first page of {size} (count + page)", ms, queries, ""))

    client = Client(HTTP_HOST="127.0.0.1")

    def api(query: str):
        response = client.get(f"/api/v1/proposals/{query}")
        assert response.status_code == 200, response.content[:200]
        return response

    def filtered_lists(when: str) -> None:
        for state in ("active", "defeated"):

            def page(state=state):
                return [p.pk for p in Paginator(proposal_list(state=state, now=now), 50).page(1).object_list]

            ms, queries, result = timed(page, args.repeat)
            rows.append((f"list filtered by state={state}, page of 50 ({when})", ms, queries, ""))
        ms, queries, response = timed(lambda: api("?state=defeated"), args.repeat)
        rows.append(
            (f"GET /api/v1/proposals/?state=defeated ({when})", ms, queries, f"count {response.json()['count']:,}")
        )

    ms, queries, response = timed(lambda: api(""), args.repeat)
    rows.append(("GET /api/v1/proposals/ (page of 50, JSON)", ms, queries, f"count {response.json()['count']:,}"))
    filtered_lists("outcomes not recorded yet: every ended row recounted")
    record_outcomes(now)
    filtered_lists("outcomes recorded by the beat")
    # PostgreSQL's JIT compiles a filtered list's many small subplans for longer
    # than they take to run: measure the same with JIT on, as servers default.
    _sql("SET jit = on")
    ms, queries, _ = timed(lambda: api("?state=defeated"), args.repeat)
    rows.append(
        (
            "GET /api/v1/proposals/?state=defeated with PostgreSQL JIT on (server default)",
            ms,
            queries,
            "why settings should pass `-c jit=off`",
        )
    )

    print(
        f"\nPostgreSQL {connection.pg_version // 10000}, {os.cpu_count()} cores; seeded "
        f"{VOTERS:,} voters, {PROPOSALS + 1:,} proposals and {VOTERS + PROPOSALS * VOTES_PER_LISTED_PROPOSAL:,} "
        f"votes in {seeded:.1f} s; median of {args.repeat} runs.\n"
    )
    print("| measurement | ms | queries | note |")
    print("|---|---:|---:|---|")
    for name, ms, queries, note in rows:
        print(f"| {name} | {ms:.1f} | {queries} | {note} |")


if __name__ == "__main__":
    main()
