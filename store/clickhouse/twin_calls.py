"""Billing-once across traces and replicas (issue 17): the twin of a call that another replica stored.

Two spans of one call land in two traces when an instrumentation lost the trace context: one that never
makes its span current, with no app span around the call (OpenLLMetry), leaves the SDK's span in a trace of
its own; a call run in a thread the context did not follow does the same. Either way the span that lost it
is the root of its trace. The writer joins such twins by response id (store/writer.py,
`_join_twins_across_traces`); with replicas routed by trace id the two traces usually reach two replicas,
and in the same moment: both spans end within milliseconds, the app exports them in one request, and the
Collector splits it. Neither replica can see the other's span when it writes its own. So:

- ClickHouse keeps the root calls apart, sorted by response id (`root_calls`, schema m011: in an app whose
  calls run under its own spans it holds next to nothing). Each call a replica writes is looked up there
  `RECHECK_AFTER_S` after it was written, for a twin in another trace, off the path of any request's ack (a
  twin this replica's own working store holds is joined when the later of the two is written, as on SQLite).
- One rule says which replica moves the billing, so that it moves exactly once:
  - a root and a span under another root: the replica that wrote the second's trace finds the pair (roots
    look up roots only), so it moves whichever span is not the keeper, whenever it finds them. Unless the
    root was stored more than two minutes after the other, past that replica's last recheck: a root call
    stored more than `LATE_S` after it ended (a backlog) is looked up among every call at its own last recheck
    (`stored_twins_under_roots`, on the spans: no index by response id there, so for late roots only), and its
    replica, the last writer of the root's trace, moves it once the other's rechecks are over:
    `RECHECK_AFTER_S[-1]` + `MARGIN_S` after the other trace's version. If its last recheck comes before that
    (the other trace was written again, not that span, less than 30 s before the root was stored), it is
    looked up once more then (MovePolicy.waiting, Rechecks.later);
  - two roots: both replicas find the pair. The one that last wrote the trace of the span to unbill moves
    it, within `OWNER_S` of that write (its rechecks run that long); after that, and `MARGIN_S` more for
    clocks that disagree, the one that wrote the keeper's trace does (its rechecks run long enough to get
    there); nobody in between. Both judge by the trace's version in ClickHouse (when its last writer wrote it).

Not covered: twins neither of which is a root (a context leaked from another request);
a replica restarted on another working store between writing a call and its last recheck (on its own, it
takes them back: trace_sync.py's `save` at a clean stop, `log_write` otherwise; for two roots the other
replica's still converge unless both were written in the same moment). A trace written by two replicas at
once is decided again as a whole by one of them (trace_sync.py's trace checks).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from store.clickhouse.client import among, text_batches
from store.clickhouse.schema import HOUR_NS, ROOT_CALLS_TABLE
from store.models import Call
from store.writer import TWIN_SLACK_NS, windows_nest

S = 1_000_000_000
# When a call is looked up again after it was written. 2 s: the other span of the same export request is
# committed by then. 60 s: for a twin exported later (of two roots, the last recheck within OWNER_S). 120 s:
# past OWNER_S + MARGIN_S of a twin written at the same moment, so that for two roots the keeper's replica
# moves it if the other replica restarted before its rechecks. Each round is a lookup per call
# (bench/clickhouse_ingest.py).
RECHECK_AFTER_S = (2, 60, 120)
OWNER_S = 65
MARGIN_S = 30  # replicas' clocks may disagree by this much
# A twin that wraps the call (a framework's span around the SDK's) starts before it: by how much, at most.
LEAD_NS = HOUR_NS
# Late roots looked up together start within this of each other (by_time).
STRETCH_NS = HOUR_NS
# A response id that many calls share is a fixed one (a mock server's, a replay's): twins cannot be told
# apart by it, and matching every stored row against every call would cost their product. An id more than
# SHARED_ID_CALLS of the looked-up calls carry is left out; at most ROWS_PER_ID stored rows are read per id.
SHARED_ID_CALLS = 20
ROWS_PER_ID = 50
MAX_QUEUED = 200_000
# Calls looked up in one pass (one query each for the two lookups). A pass the server refuses is retried in
# halves (TraceSync.refused), so that one call's lookup that fails cannot hold up the others.
PASS_CALLS = 2000
# A lookup that runs longer than this is stopped by the server (and retried in halves): the writer waits on it,
# and acks on the writer. Four times the slowest measured pass (2,000 late roots at 5M spans an hour: 440 ms).
LOOKUP_TIMEOUT_S = 2
_BOUNDED = f"SETTINGS max_execution_time = {LOOKUP_TIMEOUT_S}"
# A root call stored this long after it ended may have a twin under another root whose replica's rechecks
# (RECHECK_AFTER_S from its write) ended before this one was stored: it is looked up among every call.
LATE_S = RECHECK_AFTER_S[-1] - MARGIN_S


def stored_twins(client: Any, calls: Sequence[Call]) -> list[tuple[Call, bytes]]:
    """(call, trace) for each trace other than the call's own whose root is a twin of the call: a root call
    with its response id, at another layer, whose time window nests with its."""
    grouped = _by_response(calls)
    if grouped is None:
        return []
    # In an app whose calls run under its own spans there are no root calls: one row asked for, no ids sent.
    within = "start_ns BETWEEN {first:Int64} AND {last:Int64} AND is_deleted = 0"
    if not client.query(f"SELECT 1 FROM {ROOT_CALLS_TABLE} WHERE {within} LIMIT 1", grouped[1]):
        return []
    return _matched(client, *grouped,
                    f"SELECT response_id, trace_id, call_layer, start_ns, end_ns FROM {ROOT_CALLS_TABLE} "
                    f"WHERE $IDS AND {within} LIMIT {ROWS_PER_ID} BY response_id {_BOUNDED}")


def stored_twins_under_roots(client: Any, calls: Sequence[Call]) -> list[tuple[Call, bytes]]:
    """As stored_twins, for late root calls: the calls under another root with their response id, looked up
    in the spans themselves (root_calls holds roots only), within the calls' hours. A span's ids, layer and
    times do not change between its versions, so no FINAL: a forgotten span's older row only brings its trace
    to the pull, which drops it."""
    found: list[tuple[Call, bytes]] = []
    for stretch in by_time(calls):
        grouped = _by_response(stretch)
        if grouped is None:
            continue
        # One query for a stretch's calls (their ids in several parameters): each reads the window's spans
        # whole, so a query per 500 ids read it four times for a recheck's 2,000.
        found += _matched(client, *grouped,
                          "SELECT response_id, trace_id, call_layer, start_ns, end_ns FROM spans "
                          "WHERE start_ns BETWEEN {first:Int64} AND {last:Int64} AND $IDS "
                          "AND parent_span_id IS NOT NULL AND kind IN ('llm', 'embedding') AND is_deleted = 0 "
                          f"LIMIT {ROWS_PER_ID} BY response_id {_BOUNDED}", one_query=True)
    return found


def by_time(calls: Sequence[Call]) -> list[list[Call]]:
    """The calls in stretches of STRETCH_NS of their starts. A late root's recheck reads every span of its window
    (LEAD_NS before it): a pass's late roots hours apart (a backfill replayed by several workers at once) read
    their own hours, not every hour between them, and none reads more than about two hours, well within
    LOOKUP_TIMEOUT_S. Calls written in order (a backlog) make one stretch, one query."""
    stretches: list[list[Call]] = []
    for call in sorted(calls, key=lambda c: c.start_ns):
        if stretches and call.start_ns - stretches[-1][0].start_ns <= STRETCH_NS:
            stretches[-1].append(call)
        else:
            stretches.append([call])
    return stretches


def _by_response(calls: Sequence[Call]) -> tuple[dict[str, list[Call]], dict[str, int]] | None:
    """The calls by response id (an id more than SHARED_ID_CALLS of them share left out), and the window a twin
    of one of them starts in; None when no call is left to look up."""
    by_response: dict[str, list[Call]] = {}
    for call in calls:
        by_response.setdefault(call.response_id, []).append(call)
    by_response = {rid: same for rid, same in by_response.items() if len(same) <= SHARED_ID_CALLS}
    if not by_response:
        return None
    kept = [call for same in by_response.values() for call in same]
    return by_response, {"first": min(c.start_ns for c in kept) - LEAD_NS,
                         "last": max(c.end_ns for c in kept) + TWIN_SLACK_NS}


def _matched(client: Any, by_response: dict[str, list[Call]], window: dict[str, int], sql: str,
             one_query: bool = False) -> list[tuple[Call, bytes]]:
    """(call, trace) for each row `sql` finds (response id, trace, layer, start, end; `$IDS` in it the condition
    on the response ids: a batch of them a query, or all of them in one) in another trace, at another layer,
    whose time window nests with the call's."""
    found: set[tuple[Call, bytes]] = set()
    parts = list(text_batches(sorted(by_response)))
    for group in ([parts] if one_query else [[part] for part in parts]):
        condition, params = among("response_id", "String", group)
        for response_id, trace_id, layer, start, end in client.query(sql.replace("$IDS", condition),
                                                                     {**params, **window}):
            trace_id = bytes(trace_id)
            for call in by_response.get(response_id, ()):
                if (trace_id != call.trace_id and layer != call.layer
                        and windows_nest(call.start_ns, call.end_ns, int(start), int(end))):
                    found.add((call, trace_id))
    return sorted(found)


class Rechecks:
    """The calls this replica wrote, by their row id in its working store (about 200 bytes each: the call
    itself is read back from there when due), each due to be looked up again at every RECHECK_AFTER_S after
    the write (by the writer's clock), with the version that write gave its trace."""

    def __init__(self) -> None:
        self._queues: list[deque[tuple[int, int, int]]] = [deque() for _ in RECHECK_AFTER_S]
        # A call's one live entry: its newest write's version and the step its entry waits at. Every other
        # entry of it is stale (an older write's, or a step a put-back entry was taken forward to).
        self._latest: dict[int, tuple[int, int]] = {}
        # The last `due`'s calls: the version and step each was taken at (`again` and `give_up` take those).
        self._taken: dict[int, tuple[int, int]] = {}
        # Calls looked up once more after their last step, when another replica's rechecks are over (MovePolicy's
        # `waiting`): a heap of (due, row id, version), taken as the last step's.
        self._later: list[tuple[int, int, int]] = []
        self.dropped = 0  # calls never rechecked because the queue was full
        self.given_up = 0  # calls whose lookup ClickHouse refused on its own (TraceSync.refused)

    def __len__(self) -> int:
        return len(self._latest)

    def written(self, row_ids: Iterable[int], version: int) -> None:
        first = self._queues[0]
        for row_id in row_ids:
            if len(self._latest) >= MAX_QUEUED and row_id not in self._latest:
                self.dropped += 1
                continue
            self._latest[row_id] = (version, 0)
            first.append((version + RECHECK_AFTER_S[0] * S, row_id, version))

    def due_by(self, now: int) -> bool:
        return any(queue and queue[0][0] <= now for queue in (*self._queues, self._later))

    def due(self, now: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` (row id, version) due by `now`; each moves on to its next recheck (or is done after
        the last) unless `again` puts it back."""
        out: list[tuple[int, int]] = []
        self._taken = {}
        for step, queue in enumerate(self._queues):
            while queue and queue[0][0] <= now and len(out) < limit:
                _due, row_id, version = queue.popleft()
                if self._latest.get(row_id) != (version, step):
                    continue  # written again since, or put back after this entry was queued: stale
                out.append((row_id, version))
                self._taken[row_id] = (version, step)
                if step + 1 < len(self._queues):
                    # After `now` even when late (ClickHouse was down): not taken again by this call.
                    due_at = max(version + RECHECK_AFTER_S[step + 1] * S, now + 1)
                    self._queues[step + 1].append((due_at, row_id, version))
                    self._latest[row_id] = (version, step + 1)
                else:
                    del self._latest[row_id]
        last = len(self._queues) - 1
        while self._later and self._later[0][0] <= now and len(out) < limit:
            _due, row_id, version = heapq.heappop(self._later)
            if self._latest.get(row_id) == (version, last):
                out.append((row_id, version))
                self._taken[row_id] = (version, last)
                del self._latest[row_id]
        return out

    def later(self, row_id: int, version: int, due_at: int) -> None:
        """Look this call up once more at `due_at`, as at its last step (unless written again since)."""
        current = self._latest.get(row_id)
        if current is not None and current[0] != version:
            return  # written again: that write's rechecks look it up
        if current is None and len(self._latest) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._latest[row_id] = (version, len(self._queues) - 1)
        heapq.heappush(self._later, (due_at, row_id, version))

    def waiting(self) -> list[tuple[int, int, int, int]]:
        """(row id, version, step, due) of each call still to be looked up again: its live entry."""
        last = len(self._queues) - 1
        return [(row_id, version, step, due_at)
                for step, queue in (*enumerate(self._queues), (last, sorted(self._later)))
                for due_at, row_id, version in queue if self._latest.get(row_id) == (version, step)]

    def restore(self, entries: Iterable[tuple[int, int, int, int]]) -> None:
        """Take back what `waiting` gave (a restarted replica's rechecks), in the queues' order."""
        for row_id, version, step, due_at in sorted(entries, key=lambda e: (e[2], e[3])):
            if step >= len(self._queues) or (len(self._latest) >= MAX_QUEUED and row_id not in self._latest):
                continue
            self._latest[row_id] = (version, step)
            self._queues[step].append((due_at, row_id, version))

    def again(self, entries: Sequence[tuple[int, int]], now: int, wait: int = S) -> None:
        """Entries of the last `due` whose recheck could not run (ClickHouse unreachable, the lookup refused) or
        is left to the next pass: due again `wait` ns later, at the step they were taken at, first and in their
        order. The entry `due` queued at their next step goes stale, so that each is looked up once there (a
        last one included: it is done only after a recheck that ran)."""
        retry = now + wait
        back: list[list[tuple[int, int, int]]] = [[] for _ in self._queues]
        for row_id, version in entries:
            current = self._latest.get(row_id)
            if current is not None and current[0] != version:
                continue  # written again since: that write's entry rechecks it
            taken = self._taken.get(row_id)
            step = taken[1] if taken is not None and taken[0] == version else 0
            self._latest[row_id] = (version, step)
            back[step].append((retry, row_id, version))
        for queue, entries_back in zip(self._queues, back):
            queue.extendleft(reversed(entries_back))

    def give_up(self, entries: Sequence[tuple[int, int]]) -> None:
        """Entries never to be looked up again (their lookup is refused): their queued steps go stale."""
        for row_id, version in entries:
            current = self._latest.get(row_id)
            if current is None:  # done, unless this pass took its last recheck
                live = self._taken.get(row_id, (None,))[0] == version
            else:
                live = current[0] == version
            if live:
                self._latest.pop(row_id, None)
                self._taken.pop(row_id, None)
                self.given_up += 1


class MovePolicy:
    """Which replica may move a call's billing from one span to its twin (the module docstring), for one
    batch: `versions` the looked-up traces' versions in ClickHouse; `mine` the traces this replica wrote last,
    with that write's version (None: this batch writes them now)."""

    def __init__(self, versions: dict[bytes, int], mine: dict[bytes, int | None]) -> None:
        self.versions = versions
        self.mine = mine
        # Late roots' traces whose move waits for the other replica's rechecks to be over: when they are.
        self.waiting: dict[bytes, int] = {}

    def may_move(self, member_trace: bytes, keeper_trace: bytes, now: int, roots: tuple[bool, bool],
                 non_root_trace: bytes) -> bool:
        """May this replica change the billing of a span of `member_trace` (to point at, or stop pointing at,
        the keeper in `keeper_trace`)? `roots`: whether the span this batch wrote or rechecked, and the twin it
        was joined with, are roots; `non_root_trace`: the trace of the one that is not (if one is not)."""
        if self.mine.get(member_trace, 0) is None or member_trace not in self.versions:
            return True  # this batch writes the trace, or only this working store has it (not shipped yet)
        if roots == (True, True):
            written = self.mine.get(member_trace)
            if written is not None and now <= written + OWNER_S * S:
                return True
            return keeper_trace in self.mine and now >= self.versions[member_trace] + (OWNER_S + MARGIN_S) * S
        if roots == (False, False):
            return True  # found in this working store alone: nothing else looks for such a pair
        if self._wrote(non_root_trace):
            return True
        # A late root's replica (stored_twins_under_roots), once the other's rechecks are over: it wrote the
        # trace under the other root at that trace's version at the latest, and rechecked it for RECHECK_AFTER_S.
        # If that trace was written again since (not its call: its rechecks did not start over) less than 30 s
        # before the root, that is after the root's last recheck: the root's replica looks it up again then
        # (`waiting`, Rechecks.later), or nobody would move it.
        root_trace = keeper_trace if member_trace == non_root_trace else member_trace
        if root_trace not in self.mine or non_root_trace not in self.versions:
            return False
        over_at = self.versions[non_root_trace] + (RECHECK_AFTER_S[-1] + MARGIN_S) * S
        if now < over_at:
            self.waiting[root_trace] = max(over_at, self.waiting.get(root_trace, 0))
            return False
        return True

    def _wrote(self, trace_id: bytes) -> bool:
        return trace_id in self.mine or trace_id not in self.versions


# No lookup (SQLite store, or ClickHouse unreachable): the working store decides, as on one machine.
class AnyMove:
    def __init__(self) -> None:
        self.waiting: dict[bytes, int] = {}  # nothing waits: never written

    def may_move(self, member_trace: bytes, keeper_trace: bytes, now: int, roots: tuple[bool, bool],
                 non_root_trace: bytes) -> bool:
        return True


ANY_MOVE = AnyMove()
