"""The OpenAPI fuzz on the server databases (PostgreSQL, then MariaDB), as the admin and as a
member of another project, in schemathesis's examples, coverage (boundary and just-outside
values of every constraint the document states) and fuzzing phases: no input ends in a 5xx,
every error body has its API's shape, and a refused request commits no write.

The member's cases put ids of rows that exist (the admin's, made by the admin's run before)
in the path, so the refusals checked are those of real resources of another project, not
only of ids that match nothing. Then the stateful phase: schemathesis chains operations along
the document's OpenAPI links (each create to the operations on what it made), as each user,
with the same checks.

Bounded per operation (see the constants): ~195 operations x 2 users, ~9,000 coverage and
~4,000 fuzzing requests per backend, about 70 s per backend on the shared 2-core test machine.
The generated phases' cases are the same on every backend: the first backend draws them, the
next sends them again (:class:`KeptCases`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import re
from collections.abc import Iterator

import hypothesis
import pytest
import requests
import schemathesis
import sqlalchemy as sa
import webtest
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.hypothesis.builder import generate_example_cases
from schemathesis.generation.overrides import Override

from fabric import config
from fabric.api import network_quotas, quota
from fabric.db import Database
from fabric.network import secgroups_db
from tests.fixtures.api import ApiHarness, build_harness
from tests.fixtures.databases import EXERCISED, create_schema_database
from tests.fixtures.image_objectstore import serving_objectstore
from tests.unit.api.test_openapi_fuzz import BASE, OPERATIONS, SCHEMA, check_response, send

#: Coverage-phase cases per operation and user, spread evenly over the operation's whole list
#: (the list runs parameter by parameter, so its head alone would test the first parameter only).
#: Today's largest operation has 178 and all ~4,500 run: a sample of 12 each missed the
#: 2**31 boundaries that PostgreSQL refused with a 5xx. The cap guards the runtime as the
#: document grows.
COVERAGE_CASES = 300
#: Fuzzing-phase cases per operation and user.
FUZZ_CASES = 10
#: Stateful phase, per user: scenarios, and steps (operations chained along links) in each.
STATEFUL_SCENARIOS = 150
STATEFUL_STEPS = 8
#: Runs the stateful phase may take to finish its scenarios (see the test).
STATEFUL_RUNS = 6
WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
#: Which table holds the rows a path parameter names (others stay generated).
PATH_TABLES = {
    "server_id": "instances", "network_id": "networks", "subnet_id": "subnets", "port_id": "ports",
    "router_id": "routers", "image_id": "images", "flavor_id": "flavors", "floating_id": "floating_ips",
    "pool_id": "subnet_pools", "rule_id": "security_group_rules", "aggregate_id": "aggregates",
    "project_id": "projects", "user_id": "users", "group_id": "identity_groups", "role_id": "roles",
    "domain_id": "domains", "service_id": "catalog_services", "endpoint_id": "catalog_endpoints",
}
PRINCIPALS = {"project_id", "user_id", "group_id", "role_id", "domain_id"}
ORDER = [(who, label) for who in ("admin", "member") for label in sorted(OPERATIONS)]


class CommittedWrites:
    """The write statements of every transaction ``db`` committed since the last :meth:`take`
    (rolled-back ones do not count: a refusal may try, but must not keep, a write)."""

    def __init__(self, db: Database) -> None:
        self.pending: list[str] = []
        self.committed: list[str] = []
        sa.event.listen(db.engine, "before_cursor_execute", self._execute)
        sa.event.listen(db.engine, "commit", self._commit)
        sa.event.listen(db.engine, "rollback", self._rollback)

    def _execute(self, conn, cursor, statement, parameters, context, executemany):
        if WRITES.match(statement):
            self.pending.append(statement.split("(")[0].strip())

    def _commit(self, conn):
        self.committed += self.pending
        self.pending = []

    def _rollback(self, conn):
        self.pending = []

    def take(self) -> list[str]:
        taken, self.committed, self.pending = self.committed, [], []
        return taken


class ServerFuzz:
    def __init__(self, harness: ApiHarness, statuses: collections.Counter) -> None:
        self.harness = harness
        self.member = harness.make_member()
        for project_id in (harness.admin.project_id, self.member.project_id):
            _make_lazy_rows(harness.db, project_id)
        _seed_admin_resources(harness)
        self.writes = CommittedWrites(harness.db)
        #: (user, status) -> how many responses: what the fuzz reached, checked at the end.
        self.statuses = statuses
        self._foreign_ids: dict[str, str] | None = None

    def foreign_ids(self) -> dict[str, str]:
        """One id per path parameter of a row the member's project does not own (the seeded
        ones or those the admin's cases made; read once)."""
        if self._foreign_ids is None:
            self._foreign_ids = {}
            with self.harness.db.engine.connect() as conn:
                for parameter, name in PATH_TABLES.items():
                    table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                    query = sa.select(table.c.id).limit(1)
                    if "project_id" in table.c:
                        query = query.where(table.c.project_id != self.member.project_id)
                    elif name == "projects":
                        query = query.where(table.c.id != self.member.project_id)
                    elif name == "users":
                        query = query.where(table.c.id != self.member.user_id)
                    found = conn.execute(query).scalar()
                    if found is not None:
                        self._foreign_ids[parameter] = str(found)
        return self._foreign_ids


    def send_and_check(self, who: str, token: str, label: str, case,
                       failures: list[str] | None = None) -> webtest.TestResponse:
        """Send ``case`` as ``who``: no 5xx, the answer's shape, nothing committed by a refusal;
        a failed check raises, or with ``failures`` is added to it."""
        self.writes.take()
        response = send(self.harness.app, token, case)
        self.statuses[who, response.status_int] += 1
        try:
            check_response(label, case, response)
            if response.status_int >= 400:
                written = self.writes.take()
                assert not written, f"{label} refused with {response.status_int} yet committed {written}"
        except AssertionError as failure:
            if failures is None:
                raise
            failures.append(f"{case.method} {case.formatted_path}: {failure}"[:500])
        return response


def _make_lazy_rows(db: Database, project_id: str) -> None:
    """The rows a project gets on first use whatever the request's fate (its ``default``
    security group, its quota usage counters at zero), made up front: the refusal check then
    holds every request to writing nothing at all."""
    secgroups_db.ensure_default_group(db, project_id)
    quota.ensure_usage_rows(db, project_id, [*quota.ALL_DEFAULT_LIMITS, *network_quotas.UNLIMITED])


def _seed_admin_resources(harness: ApiHarness) -> None:
    """One of each main resource in the admin's project, made through the API (the image's
    data uploaded to the objectstore), for the cases to act on."""
    app, headers = harness.app, {"X-Auth-Token": harness.admin.token}
    flavor = app.post_json("/compute/v2.1/flavors", {"flavor": {"name": "fuzz", "ram": 64, "vcpus": 1, "disk": 1}},
                           headers=headers).json["flavor"]
    image_id = app.post_json("/image/v2/images", {"name": "fuzz", "disk_format": "raw", "container_format": "bare"},
                             headers=headers, status=201).json["id"]
    app.put(f"/image/v2/images/{image_id}/file", b"abc", status=204,
            headers=dict(headers, **{"Content-Type": "application/octet-stream"}))
    network = app.post_json("/networking/v2.0/networks", {"network": {"name": "fuzz"}}, headers=headers).json
    network_id = network["network"]["id"]
    app.post_json("/networking/v2.0/subnets", {"subnet": {"network_id": network_id, "cidr": "10.9.0.0/24",
                                                          "ip_version": 4}}, headers=headers)
    app.post_json("/networking/v2.0/ports", {"port": {"network_id": network_id}}, headers=headers)
    app.post_json("/networking/v2.0/routers", {"router": {"name": "fuzz"}}, headers=headers)
    app.post_json("/compute/v2.1/servers", {"server": {
        "name": "fuzz", "flavorRef": flavor["id"], "imageRef": image_id,
        "networks": [{"uuid": network_id}]}}, headers=headers, status=202)


@contextlib.contextmanager
def _fuzz_target(database_servers, backend: str, workdir, statuses: collections.Counter) -> Iterator[ServerFuzz]:
    """The app over a fresh database on one server backend, its image data path reaching a
    real objectstore (on an engine of its own: the refusal check counts the API's own
    transactions)."""
    EXERCISED.add(backend)
    database = Database(create_schema_database(database_servers, backend))
    settings_ = config.Settings().replace(default={"data_dir": str(workdir / "data")}, api={"public_url": BASE})
    harness = build_harness(database, settings_)
    store_db = Database(database.url.render_as_string(hide_password=False))
    with serving_objectstore(settings_, store_db) as served:
        harness.settings = harness.app.app.deps.settings = served.settings
        yield ServerFuzz(harness, statuses)
    store_db.dispose()
    database.dispose()


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def server_fuzz(request, database_servers, tmp_path_factory):
    """Kept for the backend's whole generated run: the member's cases need the rows the
    admin's cases made."""
    with _fuzz_target(database_servers, request.param, tmp_path_factory.mktemp(f"fuzz-{request.param}"),
                      collections.Counter()) as fuzz:
        yield fuzz


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def stateful_fuzz(request, database_servers, tmp_path_factory):
    """A database of its own for the stateful phase: the generated run before it leaves
    whatever its cases did (default quotas set to zero, names taken), and the chains must
    reach what they make whatever order the tests ran in."""
    with _fuzz_target(database_servers, request.param,
                      tmp_path_factory.mktemp(f"stateful-{request.param}"), collections.Counter()) as fuzz:
        yield fuzz


def _spread(cases: list, count: int) -> list:
    if len(cases) <= count:
        return cases
    step = len(cases) / count
    return [cases[int(i * step)] for i in range(count)]


def _existing(server_fuzz: ServerFuzz, who: str, label: str) -> Override:
    """Path ids of rows that exist (the member's: the admin's), for ``label``'s parameters; never
    the admin's own principals (deleting itself would leave the rest of the run a string of 401s)."""
    return Override(path_parameters={
        name: value for name, value in server_fuzz.foreign_ids().items()
        if "{" + name + "}" in label and not (who == "admin" and name in PRINCIPALS)})


@dataclasses.dataclass
class KeptCases:
    """The cases the generated phases (examples, coverage, fuzzing) sent for one user and
    operation on one backend, for the next backend to send again rather than draw them anew.
    Drawn anew they come out the same but for the path's ids of existing rows (``ids``:
    parameter -> id, the backend's own, swapped here): the examples (each the simplest draw)
    and the coverage cases are deterministic, and the fuzzing phase is derandomized, its seed
    the digest of ``fuzz``'s source. Measured: only the first 13 tests' fuzzing cases differed
    (Hypothesis's pool of constants from modules grows as the first requests import them), and
    the second backend lacked the coverage cases with a method the path does not have
    (schemathesis makes those once per schema object). Drawing them again was about a quarter
    of the second backend's CPU."""

    ids: dict[str, str]
    cases: list

    def for_ids(self, ids: dict[str, str]) -> list | None:
        """The cases with the path's ids swapped for ``ids`` (the kept ones now name those), or
        None when ``ids`` names other parameters (the cases would not be the same)."""
        if set(ids) != set(self.ids):
            return None
        for case in self.cases:
            parameters = case.path_parameters or {}
            swapped = {name: ids[name] if name in ids and value == self.ids[name] else value
                       for name, value in parameters.items()}
            if swapped != parameters:
                case.path_parameters = swapped
        self.ids = dict(ids)
        return self.cases


@pytest.fixture(scope="module")
def kept_cases() -> dict[tuple[str, str], KeptCases]:
    """(user, operation) -> the cases its test sent on the backend that ran it first (and
    passed); for the module's run only (some 120 MB)."""
    return {}


@pytest.mark.parametrize(("who", "label"), ORDER, ids=[f"{who}-{label}" for who, label in ORDER])
def test_no_input_causes_a_server_error_or_a_refused_write(server_fuzz, kept_cases, who, label):
    operation = OPERATIONS[label]
    token = server_fuzz.harness.admin.token if who == "admin" else server_fuzz.member.token
    existing = _existing(server_fuzz, who, label)
    kept = kept_cases.get((who, label))
    replayed = kept.for_ids(existing.path_parameters) if kept is not None else None
    if replayed is not None:
        for case in replayed:
            server_fuzz.send_and_check(who, token, label, case)
        return
    # The admin's generated phases try ids that match nothing, its fuzzing acts on what exists;
    # the member's every case aims at what exists (and is the admin's).
    override = Override() if who == "admin" else existing
    sent: list = []

    def check(case):
        server_fuzz.send_and_check(who, token, label, case)
        sent.append(case)

    examples = list(generate_example_cases(test=check, operation=operation, fill_missing=True,
                                           **override.as_strategy_kwargs()))
    generation = SCHEMA.config.generation_for(operation=operation, phase="coverage")
    coverage = list(itertools.islice(CoverageGenerator(
        operation=operation, generation_modes=generation.modes, generation_config=generation,
        auth_storage=None, override=override, feedback=FeedbackSources()), 2000))
    assert examples or coverage, f"{label}: schemathesis generated nothing to send"
    for case in examples + _spread(coverage, COVERAGE_CASES):
        check(case)

    @settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    @given(operation.as_strategy(**existing.as_strategy_kwargs()))
    def fuzz(case):
        check(case)

    fuzz()
    kept_cases[who, label] = KeptCases(dict(existing.path_parameters), sent)


def test_empty_image_filters_are_not_a_server_error(server_fuzz):
    """Every image-list filter given empty, with ``limit=0``: a 2xx or a 4xx naming the value."""
    for token in (server_fuzz.harness.admin.token, server_fuzz.member.token):
        response = server_fuzz.harness.app.get(
            "/image/v2/images?name=&id=&status=&limit=0&marker=", headers={"X-Auth-Token": token},
            expect_errors=True)
        assert response.status_int < 500, response.text
        if response.status_int >= 400:
            assert "limit" in response.json["message"] or "marker" in response.json["message"]
        else:
            assert isinstance(response.json["images"], list)


def test_the_fuzz_reached_past_authentication(server_fuzz):
    """The fuzz's cases reach past authentication: every read's example cases, sent as each user
    with the fuzz's own path ids, get answers beyond 401 (valid tokens, real work done), and the
    member is refused on the admin's resources (the ids put in the path exist). Sent here, not
    read from the other tests' tallies, so it holds whatever ran before it."""
    statuses: collections.Counter = collections.Counter()
    for who, label in ORDER:
        if not label.startswith("GET "):
            continue
        token = server_fuzz.harness.admin.token if who == "admin" else server_fuzz.member.token

        def check(case, who=who, token=token, label=label):
            statuses[who, server_fuzz.send_and_check(who, token, label, case).status_int] += 1

        for case in generate_example_cases(test=check, operation=OPERATIONS[label], fill_missing=True,
                                           **_existing(server_fuzz, who, label).as_strategy_kwargs()):
            check(case)
    print(dict(statuses))
    for who in ("admin", "member"):
        assert sum(n for (user, status), n in statuses.items() if user == who and status < 300) > 50
        assert statuses[who, 401] == 0
    assert statuses["member", 403] + statuses["member", 404] > 50
    assert {"server_id", "network_id", "image_id", "project_id"} <= set(server_fuzz.foreign_ids())


@pytest.mark.parametrize(("path", "named"), [
    ("/compute/v2.1/flavors?minDisk=2147483648", "minDisk=2147483648"),
    ("/compute/v2.1/flavors/detail?minRam=2147483648", "minRam=2147483648"),
    ("/compute/v2.1/os-server-groups?limit=9223372036854775808", "limit=9223372036854775808"),
    ("/compute/v2.1/os-server-groups?offset=2147483648", "offset=2147483648"),
])
def test_query_numbers_beyond_an_integer_column_are_refused_by_name(server_fuzz, path, named):
    """The fuzz's finds on PostgreSQL (an out-of-range comparand or LIMIT was a 500)."""
    response = server_fuzz.harness.app.get(path, headers={"X-Auth-Token": server_fuzz.member.token}, status=400)
    assert named in response.json["badRequest"]["message"]


def test_flavor_sizes_beyond_an_integer_column_are_refused_by_name(server_fuzz):
    body = {"flavor": {"name": "huge", "ram": 2**31, "vcpus": 1, "disk": 1}}
    response = server_fuzz.harness.app.post_json("/compute/v2.1/flavors", body, status=400,
                                                 headers={"X-Auth-Token": server_fuzz.harness.admin.token})
    assert "ram" in response.json["badRequest"]["message"]


@pytest.mark.parametrize("who", ["admin", "member"])
def test_chained_operations_cause_no_server_error_or_refused_write(stateful_fuzz, who):
    """The stateful phase: scenarios of operations chained along the document's links (a
    create, then reads, updates, actions and deletes of what it made, in any order), with the
    same checks as every other phase; the chains must reach rows they made."""
    token = stateful_fuzz.harness.admin.token if who == "admin" else stateful_fuzz.member.token
    linked = collections.Counter()
    # Failures are collected, not raised: a scenario replayed against a database its first run
    # changed would draw differently, and Hypothesis refuses such a replay as flaky.
    failures: list[str] = []

    scenarios = collections.Counter()

    class Scenario(SCHEMA.as_state_machine()):
        def setup(self):
            scenarios["started"] += 1

        def step(self, input):
            output = super().step(input)
            if input.transition is not None and input.is_applied:
                linked[output.response.status_code < 300] += 1
            return output

        def call(self, case, **kwargs):
            sent = stateful_fuzz.send_and_check(who, token, f"{case.operation.method.upper()} {case.operation.path}",
                                              case, failures)
            headers: dict[str, list[str]] = collections.defaultdict(list)
            for name, value in sent.headerlist:
                headers[name.lower()].append(value)
            request = requests.Request(case.method, BASE + case.formatted_path).prepare()
            return schemathesis.Response(status_code=sent.status_int, headers=headers, content=sent.body,
                                         request=request, elapsed=0.0, verify=False)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            """send_and_check checked it already (schemathesis's own checks would judge fabric's
            deliberate answers, such as 404 for another project's row, as failures)."""

    # The database outlives each scenario, so Hypothesis may find that a choice it replays now
    # meets other answers (a name taken by an earlier scenario) and stop as "flaky"; as
    # schemathesis's own runner does, that ends a run without failing it, and another run
    # (another random seed) goes on until the scenarios are done. Failures are in ``failures``.
    for _ in range(STATEFUL_RUNS):
        left = STATEFUL_SCENARIOS - scenarios["started"]
        if left <= 0:
            break
        try:
            # Derandomized: each run draws the same scenarios, so how far the chains reach is the
            # code's doing, not the seed's (a random seed gave the member 3 to 20 linked steps).
            Scenario.run(settings=settings(max_examples=left, stateful_step_count=STATEFUL_STEPS, deadline=None,
                                           suppress_health_check=list(HealthCheck), database=None,
                                           derandomize=True))
        except hypothesis.errors.Flaky:
            continue
    print(who, "scenarios:", scenarios["started"])
    print(who, "linked steps (2xx, other):", linked[True], linked[False])
    assert not failures, "\n".join(sorted(set(failures))[:20])
    assert linked[True] > 10, f"the chains reached what they made only {linked[True]} times"
