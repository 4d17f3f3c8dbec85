"""The ECS/ALB rollout executor against a real AWS-compatible endpoint (moto's server on loopback).

Each test builds its own two target groups, listener and ECS services on one shared VPC, load
balancer and cluster, so the tests do not depend on each other's weights.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from deployments.rollouts.executors import ExecutorError
from deployments.rollouts.executors.aws import EcsAlbExecutor
from deployments.rollouts.executors.registry import get_executor

REGION = "eu-west-1"
ACCESS_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
SECRET_ACCESS_KEY = "moto-secret-" + secrets.token_urlsafe(24)
# Names unique to this run: the moto server is shared by the whole test session.
RUN = secrets.token_hex(3)
_names = itertools.count(1)


@dataclass
class Shared:
    session: boto3.session.Session
    endpoint: str
    ec2: Any
    elbv2: Any
    ecs: Any
    vpc_id: str
    load_balancer_arn: str
    cluster: str
    task_definition: str
    image_id: str
    stable_instances: list[str]
    candidate_instances: list[str]


@dataclass
class Stack:
    shared: Shared
    config: dict[str, Any]

    @property
    def elbv2(self) -> Any:
        return self.shared.elbv2

    @property
    def ecs(self) -> Any:
        return self.shared.ecs

    def executor(self, **overrides: Any) -> EcsAlbExecutor:
        return EcsAlbExecutor({**self.config, **overrides}, session=self.shared.session)

    def listener_weights(self) -> dict[str, int]:
        listener = self.elbv2.describe_listeners(ListenerArns=[self.config["listener_arn"]])
        return _forward_weights(listener["Listeners"][0]["DefaultActions"])

    def desired_counts(self) -> dict[str, int]:
        names = [self.config["stable_service"], self.config["candidate_service"]]
        found = self.ecs.describe_services(cluster=self.config["cluster"], services=names)
        by_name = {s["serviceName"]: s["desiredCount"] for s in found["services"]}
        return {"stable": by_name[names[0]], "candidate": by_name[names[1]]}

    def split(self, percent: int) -> dict[str, int]:
        """The weights the listener should hold for ``percent`` % to the candidate."""
        return {
            self.config["stable_target_group_arn"]: 100 - percent,
            self.config["candidate_target_group_arn"]: percent,
        }

    def run_instances(self, count: int) -> list[str]:
        reservation = self.shared.ec2.run_instances(
            ImageId=self.shared.image_id, MinCount=count, MaxCount=count, InstanceType="t3.micro"
        )
        return [i["InstanceId"] for i in reservation["Instances"]]

    def scale_candidate(self, desired: int) -> None:
        """What a deployment does outside the executor (moto runs the tasks at once)."""
        self.ecs.update_service(
            cluster=self.config["cluster"],
            service=self.config["candidate_service"],
            desiredCount=desired,
        )

    def candidate_targets_up(self) -> None:
        """Stands in for ECS registering the candidate's tasks: moto does not do it itself."""
        self.register_candidate_targets(self.shared.candidate_instances)

    def register_candidate_targets(self, instance_ids: list[str]) -> None:
        self.elbv2.register_targets(
            TargetGroupArn=self.config["candidate_target_group_arn"],
            Targets=[{"Id": i, "Port": 8000} for i in instance_ids],
        )


def _forward_weights(actions: list[dict[str, Any]]) -> dict[str, int]:
    (forward,) = [a for a in actions if a["Type"] == "forward"]
    if "ForwardConfig" in forward:
        return {g["TargetGroupArn"]: g["Weight"] for g in forward["ForwardConfig"]["TargetGroups"]}
    return {forward["TargetGroupArn"]: 1}


@pytest.fixture(scope="module")
def shared(moto_endpoint: str) -> Shared:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    ec2 = session.client("ec2", endpoint_url=moto_endpoint)
    elbv2 = session.client("elbv2", endpoint_url=moto_endpoint)
    ecs = session.client("ecs", endpoint_url=moto_endpoint)

    vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for cidr, zone in (("10.42.1.0/24", f"{REGION}a"), ("10.42.2.0/24", f"{REGION}b"))
    ]
    load_balancer_arn = elbv2.create_load_balancer(
        Name=f"llm-rollouts-{RUN}", Subnets=subnets, Type="application", Scheme="internal"
    )["LoadBalancers"][0]["LoadBalancerArn"]

    cluster = f"llm-cluster-{RUN}"
    ecs.create_cluster(clusterName=cluster)
    task_definition = ecs.register_task_definition(
        family="llm",
        containerDefinitions=[
            {
                "name": "app",
                "image": "llmplatform:2",
                "memory": 512,
                "portMappings": [{"containerPort": 8000}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    image_id = "ami-0123456789abcdef0"  # moto runs any image id; listing its catalogue is slow
    instances = [
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId=image_id, MinCount=5, MaxCount=5, InstanceType="t3.micro", SubnetId=subnets[0]
        )["Instances"]
    ]
    return Shared(
        session=session,
        endpoint=moto_endpoint,
        ec2=ec2,
        elbv2=elbv2,
        ecs=ecs,
        vpc_id=vpc_id,
        load_balancer_arn=load_balancer_arn,
        cluster=cluster,
        task_definition=task_definition,
        image_id=image_id,
        stable_instances=instances[:2],
        candidate_instances=instances[2:],
    )


def _target_group(shared: Shared, name: str) -> str:
    return shared.elbv2.create_target_group(
        Name=name,
        Protocol="HTTP",
        Port=8000,
        VpcId=shared.vpc_id,
        TargetType="instance",
        HealthCheckPath="/health",
    )["TargetGroups"][0]["TargetGroupArn"]


def _service(shared: Shared, name: str, target_group_arn: str, desired: int) -> None:
    shared.ecs.create_service(
        cluster=shared.cluster,
        serviceName=name,
        taskDefinition=shared.task_definition,
        desiredCount=desired,
        loadBalancers=[
            {"targetGroupArn": target_group_arn, "containerName": "app", "containerPort": 8000}
        ],
    )


@pytest.fixture
def stack(shared: Shared) -> Stack:
    """Blue (stable, 2 tasks, all traffic) and green (candidate, 0 tasks) behind one listener."""
    n = next(_names)
    stable_tg = _target_group(shared, f"llm-blue-{n}-{RUN}")
    candidate_tg = _target_group(shared, f"llm-green-{n}-{RUN}")
    shared.elbv2.register_targets(
        TargetGroupArn=stable_tg, Targets=[{"Id": i} for i in shared.stable_instances]
    )
    listener_arn = shared.elbv2.create_listener(
        LoadBalancerArn=shared.load_balancer_arn,
        Protocol="HTTP",
        Port=8000 + n,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": stable_tg}],
    )["Listeners"][0]["ListenerArn"]
    _service(shared, f"llm-blue-{n}-{RUN}", stable_tg, desired=2)
    _service(shared, f"llm-green-{n}-{RUN}", candidate_tg, desired=0)
    config = {
        "region": REGION,
        "endpoint_url": shared.endpoint,
        "cluster": shared.cluster,
        "stable_service": f"llm-blue-{n}-{RUN}",
        "candidate_service": f"llm-green-{n}-{RUN}",
        "listener_arn": listener_arn,
        "stable_target_group_arn": stable_tg,
        "candidate_target_group_arn": candidate_tg,
        "candidate_desired_count": 3,
    }
    return Stack(shared=shared, config=config)


def _session_counting_writes() -> tuple[boto3.session.Session, list[str]]:
    """A session of its own whose clients note the name of every write call they make."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    writes: list[str] = []

    def record(model: Any, **_: Any) -> None:
        writes.append(model.name)

    for operation in ("ModifyListener", "ModifyRule", "UpdateService"):
        session.events.register(f"before-call.*.{operation}", record)
    return session, writes


def _assert_no_credentials(text: str) -> None:
    assert SECRET_ACCESS_KEY not in text
    assert ACCESS_KEY_ID not in text


# Shifting traffic ------------------------------------------------------------------------------


def test_the_canary_stages_set_the_listener_weights(stack: Stack) -> None:
    stack.candidate_targets_up()
    executor = stack.executor()

    for percent in (5, 25, 50, 100):
        executor.apply_split(stable="v1", candidate="v2", candidate_percent=percent)

        assert stack.listener_weights() == stack.split(percent)
        assert executor.describe()["candidate_percent"] == percent


def test_the_candidate_is_started_but_gets_no_traffic_until_it_is_healthy(stack: Stack) -> None:
    assert stack.desired_counts() == {"stable": 2, "candidate": 0}
    executor = stack.executor()

    with pytest.raises(ExecutorError) as caught:
        executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)

    assert "no traffic shifted" in str(caught.value)
    assert "no registered targets" in str(caught.value)
    assert stack.desired_counts() == {"stable": 2, "candidate": 3}
    assert stack.listener_weights() == {stack.config["stable_target_group_arn"]: 1}

    stack.candidate_targets_up()  # the tasks came up and passed the ALB's health checks
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)

    assert stack.listener_weights() == stack.split(5)


def test_more_traffic_goes_only_to_a_healthy_candidate(stack: Stack) -> None:
    executor = stack.executor(candidate_desired_count=2)
    healthy, failing = stack.run_instances(2)
    stack.register_candidate_targets([healthy, failing])
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)
    stack.shared.ec2.stop_instances(InstanceIds=[failing])

    with pytest.raises(ExecutorError, match=f"no traffic shifted: .*{failing}"):
        executor.apply_split(stable="v1", candidate="v2", candidate_percent=25)
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)  # same share: no gate

    assert stack.listener_weights() == stack.split(5)


def test_without_a_set_size_the_candidate_is_sized_like_stable(stack: Stack) -> None:
    stack.candidate_targets_up()
    config = {k: v for k, v in stack.config.items() if k != "candidate_desired_count"}

    EcsAlbExecutor(config, session=stack.shared.session).apply_split(
        stable="v1", candidate="v2", candidate_percent=25
    )

    assert stack.desired_counts() == {"stable": 2, "candidate": 2}


def test_a_rollback_returns_all_traffic_to_stable_and_stops_the_candidate(stack: Stack) -> None:
    stack.candidate_targets_up()
    executor = stack.executor()
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=25)

    executor.apply_split(stable="v1", candidate="v2", candidate_percent=0)

    assert stack.listener_weights() == stack.split(0)
    assert stack.desired_counts() == {"stable": 2, "candidate": 0}
    assert executor.describe()["candidate_percent"] == 0


def test_a_rollback_can_leave_the_candidate_running(stack: Stack) -> None:
    stack.candidate_targets_up()
    executor = stack.executor(scale_down_on_rollback=False)
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=25)

    executor.apply_split(stable="v1", candidate="v2", candidate_percent=0)

    assert stack.listener_weights() == stack.split(0)
    assert stack.desired_counts() == {"stable": 2, "candidate": 3}


def test_stable_keeps_running_at_full_switch_so_switching_back_is_instant(stack: Stack) -> None:
    stack.candidate_targets_up()
    executor = stack.executor()
    executor.apply_split(stable="blue", candidate="green", candidate_percent=100)

    assert stack.listener_weights() == stack.split(100)
    assert stack.desired_counts() == {"stable": 2, "candidate": 3}

    executor.apply_split(stable="blue", candidate="green", candidate_percent=0)

    assert stack.listener_weights() == stack.split(0)
    assert stack.desired_counts()["stable"] == 2


def test_a_green_slot_deployed_ahead_is_left_running_before_the_switch(stack: Stack) -> None:
    stack.scale_candidate(4)

    stack.executor().apply_split(stable="blue", candidate="green", candidate_percent=0)

    assert stack.listener_weights() == stack.split(0)
    assert stack.desired_counts() == {"stable": 2, "candidate": 4}


def test_applying_the_same_split_again_writes_nothing(stack: Stack) -> None:
    stack.candidate_targets_up()
    session, writes = _session_counting_writes()
    executor = EcsAlbExecutor(stack.config, session=session)
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=25)
    assert writes == ["UpdateService", "ModifyListener"]
    writes.clear()

    executor.apply_split(stable="v1", candidate="v2", candidate_percent=25)
    EcsAlbExecutor(stack.config, session=session).apply_split(
        stable="v1", candidate="v2", candidate_percent=25
    )

    assert writes == []
    assert stack.listener_weights() == stack.split(25)
    assert stack.desired_counts() == {"stable": 2, "candidate": 3}


def test_a_listener_rule_is_weighted_and_the_default_action_left_alone(stack: Stack) -> None:
    stack.candidate_targets_up()
    rule_arn = stack.elbv2.create_rule(
        ListenerArn=stack.config["listener_arn"],
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/v1/*"]}],
        Actions=[{"Type": "forward", "TargetGroupArn": stack.config["stable_target_group_arn"]}],
    )["Rules"][0]["RuleArn"]
    executor = stack.executor(rule_arn=rule_arn)

    executor.apply_split(stable="v1", candidate="v2", candidate_percent=50)

    rule = stack.elbv2.describe_rules(RuleArns=[rule_arn])["Rules"][0]
    assert _forward_weights(rule["Actions"]) == stack.split(50)
    assert rule["Conditions"][0]["Values"] == ["/v1/*"]
    assert stack.listener_weights() == {stack.config["stable_target_group_arn"]: 1}
    assert executor.describe()["candidate_percent"] == 50


def test_a_listener_forwarding_to_another_target_group_is_not_taken_over(stack: Stack) -> None:
    other = _target_group(stack.shared, f"llm-other-{next(_names)}-{RUN}")
    stack.elbv2.modify_listener(
        ListenerArn=stack.config["listener_arn"],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": other}],
    )

    with pytest.raises(ExecutorError, match="neither the stable nor the candidate"):
        stack.executor().apply_split(stable="v1", candidate="v2", candidate_percent=5)

    assert stack.listener_weights() == {other: 1}
    assert stack.desired_counts()["candidate"] == 0


@pytest.mark.parametrize("percent", [-1, 101, 12.5, True])
def test_the_candidate_share_must_be_a_whole_percentage(stack: Stack, percent: Any) -> None:
    with pytest.raises(ExecutorError, match="0 to 100"):
        stack.executor().apply_split(stable="v1", candidate="v2", candidate_percent=percent)

    assert stack.listener_weights() == {stack.config["stable_target_group_arn"]: 1}


# Health probe ----------------------------------------------------------------------------------


def test_the_probe_fails_while_the_candidate_has_no_tasks(stack: Stack) -> None:
    ok, reason = stack.executor().health_probe(candidate="v2")

    assert not ok
    assert "desired count of 0" in reason


def test_the_probe_fails_while_candidate_tasks_are_not_running_yet(stack: Stack) -> None:
    # moto reports a new service's tasks as pending (running 0) until it is updated.
    name = f"llm-late-{next(_names)}-{RUN}"
    _service(stack.shared, name, stack.config["candidate_target_group_arn"], desired=2)

    ok, reason = stack.executor(candidate_service=name).health_probe(candidate="v2")

    assert not ok
    assert "0 of 2 tasks running" in reason


def test_the_probe_fails_without_registered_targets(stack: Stack) -> None:
    stack.scale_candidate(2)

    ok, reason = stack.executor().health_probe(candidate="v2")

    assert not ok
    assert "no registered targets" in reason


def test_the_probe_passes_when_tasks_run_and_targets_are_healthy(stack: Stack) -> None:
    stack.scale_candidate(2)
    stack.register_candidate_targets(stack.run_instances(2))

    ok, reason = stack.executor().health_probe(candidate="v2")

    assert ok, reason
    assert "2 of 2 tasks running" in reason


def test_the_probe_fails_when_a_candidate_target_is_not_healthy(stack: Stack) -> None:
    stack.scale_candidate(2)
    healthy, broken = stack.run_instances(2)
    stack.register_candidate_targets([healthy, broken])
    stack.shared.ec2.stop_instances(InstanceIds=[broken])

    ok, reason = stack.executor().health_probe(candidate="v2")

    assert not ok
    assert "1 of 2 targets healthy" in reason
    assert broken in reason


def test_the_probe_fails_with_fewer_healthy_targets_than_tasks(stack: Stack) -> None:
    stack.scale_candidate(3)
    stack.register_candidate_targets(stack.run_instances(1))

    ok, reason = stack.executor().health_probe(candidate="v2")

    assert not ok
    assert "1 healthy targets for 3 tasks" in reason


# describe() ------------------------------------------------------------------------------------


def test_describe_reports_weights_and_service_counts(stack: Stack) -> None:
    stack.candidate_targets_up()
    executor = stack.executor()
    executor.apply_split(stable="v1", candidate="v2", candidate_percent=25)

    described = executor.describe()

    assert described["weights"] == stack.split(25)
    assert described["candidate_percent"] == 25
    assert described["stable"]["service"] == stack.config["stable_service"]
    assert described["stable"]["weight"] == 75
    assert described["stable"]["desired_count"] == 2
    assert described["candidate"]["weight"] == 25
    assert described["candidate"]["desired_count"] == 3
    assert described["candidate"]["running_count"] == 3
    _assert_no_credentials(json.dumps(described))


# Errors ----------------------------------------------------------------------------------------


def _config_with(stack: Stack, **changes: Any) -> dict[str, Any]:
    config = {**stack.config, **changes}
    return {k: v for k, v in config.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"listener_arn": None}, "missing: listener_arn"),
        ({"cluster": ""}, "missing: cluster"),
        ({"listener_arn": "arn:aws:elasticloadbalancing:nope"}, "is not an application load"),
        ({"stable_target_group_arn": "llm-blue"}, "is not a target group ARN"),
        ({"region": "eu-central-1"}, "not eu-central-1"),
        ({"region": "Europe"}, "not an AWS region name"),
        ({"stable_tg": "x"}, "unknown keys: stable_tg"),
        ({"candidate_desired_count": 0}, "at least 1"),
        ({"endpoint_url": "ftp://127.0.0.1"}, "http(s) URL"),
        ({"endpoint_url": "http://AKIAX:hunter2@127.0.0.1:1"}, "must not hold credentials"),
        ({"stable_service": "has space"}, "not an ECS name"),
    ],
)
def test_bad_config_is_refused_up_front_with_a_clear_error(
    stack: Stack, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExecutorError) as caught:
        EcsAlbExecutor(_config_with(stack, **changes), session=stack.shared.session)

    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_same_target_group_twice_is_refused(stack: Stack) -> None:
    config = _config_with(stack, candidate_target_group_arn=stack.config["stable_target_group_arn"])

    with pytest.raises(ExecutorError, match="target groups are the same"):
        EcsAlbExecutor(config, session=stack.shared.session)


def test_a_rule_of_another_listener_is_refused(stack: Stack) -> None:
    rule_arn = (
        stack.config["listener_arn"].replace(":listener/", ":listener-rule/")[:-4] + "beef/1234"
    )

    with pytest.raises(ExecutorError, match="does not belong to listener_arn"):
        stack.executor(rule_arn=rule_arn)


def test_credentials_in_the_config_are_refused_without_repeating_them(stack: Stack) -> None:
    config = {**stack.config, "aws_secret_access_key": SECRET_ACCESS_KEY}

    with pytest.raises(ExecutorError) as caught:
        EcsAlbExecutor(config, session=stack.shared.session)

    assert "must not hold credentials" in str(caught.value)
    _assert_no_credentials(str(caught.value))


def test_a_listener_that_does_not_exist_gives_a_clear_error(stack: Stack) -> None:
    missing = stack.config["listener_arn"][:-16] + "0123456789abcdef"

    with pytest.raises(ExecutorError) as caught:
        stack.executor(listener_arn=missing).apply_split(
            stable="v1", candidate="v2", candidate_percent=5
        )

    message = str(caught.value)
    assert "describe_listeners failed with ListenerNotFound" in message
    _assert_no_credentials(message)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert stack.desired_counts()["candidate"] == 0


def test_a_missing_candidate_service_gives_a_clear_error(stack: Stack) -> None:
    executor = stack.executor(candidate_service="llm-nobody")

    with pytest.raises(ExecutorError, match="llm-nobody does not exist"):
        executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)
    ok, reason = executor.health_probe(candidate="v2")

    assert stack.listener_weights() == {stack.config["stable_target_group_arn"]: 1}
    assert not ok
    assert "does not exist" in reason


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_gives_a_clear_error(stack: Stack) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    executor = stack.executor(endpoint_url=endpoint, max_attempts=1, connect_timeout=1)

    for call in (
        lambda: executor.apply_split(stable="v1", candidate="v2", candidate_percent=5),
        executor.describe,
        lambda: executor.health_probe(candidate="v2"),
    ):
        with pytest.raises(ExecutorError) as caught:
            call()
        assert f"cannot reach {endpoint}" in str(caught.value)
        _assert_no_credentials(str(caught.value))
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


class _FakeAws:
    """A loopback endpoint that answers every call with one fixed AWS error, after ``delay``."""

    def __init__(self, status: int, code: str, message: str, delay: float = 0) -> None:
        body = (
            '<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        ).encode()
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests += 1
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting (the timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> _FakeAws:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_throttling_is_retried_by_botocore_then_reported(stack: Stack) -> None:
    with _FakeAws(400, "Throttling", "Rate exceeded") as fake:
        executor = stack.executor(endpoint_url=fake.url, max_attempts=2)
        with pytest.raises(ExecutorError) as caught:
            executor.describe()

    assert fake.requests == 2
    assert "failed with Throttling: Rate exceeded" in str(caught.value)


def test_a_slow_endpoint_times_out_with_a_clear_error(stack: Stack) -> None:
    with _FakeAws(500, "InternalFailure", "late", delay=1) as fake:
        executor = stack.executor(endpoint_url=fake.url, max_attempts=1, read_timeout=0.2)
        with pytest.raises(ExecutorError) as caught:
            executor.describe()

    assert f"{fake.url} timed out" in str(caught.value)


def test_an_aws_message_quoting_credentials_is_scrubbed(stack: Stack) -> None:
    quoted = f"Credential={ACCESS_KEY_ID}/20250101 secret {SECRET_ACCESS_KEY} AKIAABCDEFGHIJKLMNOP"
    with _FakeAws(403, "SignatureDoesNotMatch", quoted) as fake:
        executor = stack.executor(endpoint_url=fake.url, max_attempts=1)
        with pytest.raises(ExecutorError) as caught:
            executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)

    message = str(caught.value)
    assert "SignatureDoesNotMatch" in message
    _assert_no_credentials(message)
    assert "AKIAABCDEFGHIJKLMNOP" not in message


@pytest.fixture
def isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Only environment variables count: no shared files, no instance or container role."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def test_credentials_come_from_the_standard_chain(
    stack: Stack, isolated_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    stack.candidate_targets_up()
    # As the rollout service builds it: by kind, from the rollout's stored config alone.
    executor = get_executor("aws_ecs_alb", stack.config)
    assert isinstance(executor, EcsAlbExecutor)

    executor.apply_split(stable="v1", candidate="v2", candidate_percent=5)

    assert stack.listener_weights() == stack.split(5)
    _assert_no_credentials(json.dumps(executor.describe()))


def test_no_credentials_gives_a_clear_error(stack: Stack, isolated_aws_env: None) -> None:
    with pytest.raises(ExecutorError, match="no AWS credentials found"):
        EcsAlbExecutor(stack.config).describe()
