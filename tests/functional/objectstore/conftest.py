"""A running fabric: ``fabric-api`` and ``fabric-objectstore`` as real processes on PostgreSQL and
RabbitMQ, plus projects with EC2 credentials issued through Identity's OS-EC2 API, and clients
(boto3, the aws CLI) pointed at the objectstore with default settings."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest

from fabric import config
from fabric.api.bootstrap import bootstrap
from fabric.db import Database
from fabric.rpc import signing
from tests.fixtures.api import add_user
from tests.fixtures.databases import create_schema_database
from tests.fixtures.processes import REPO, Worker, free_port, wait_until
from tests.fixtures.rabbitmq import RabbitVhost, broker_problem, unavailable

PASSWORD = "objectstore-pw"
REGION = "us-east-1"
LISTENING = "fabric objectstore listening on"


def start_worker(module: str, conf: Path, log_path: Path, name: str) -> Worker:
    """``python -m module --config-file conf``, output to ``log_path`` (appended: restarts keep history)."""
    with open(log_path, "ab") as out:
        popen = subprocess.Popen([sys.executable, "-m", module, "--config-file", str(conf)], cwd=REPO, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "AWS_"))}
                                 | {"PYTHONPATH": str(REPO)})
    return Worker(popen, log_path, name)


def stop_worker(worker: Worker) -> None:
    """SIGTERM by its own PID, SIGKILL if it will not go; reaped either way."""
    if worker.popen.poll() is None:
        worker.popen.send_signal(signal.SIGTERM)
        try:
            worker.popen.wait(15)
        except subprocess.TimeoutExpired:
            worker.popen.kill()
            worker.popen.wait(15)


@dataclasses.dataclass(frozen=True)
class Keys:
    access: str
    secret: str
    user_id: str
    project_id: str
    project_name: str


@dataclasses.dataclass
class Stack:
    db: Database
    conf: Path
    data_dir: Path
    api_url: str
    s3_url: str
    workdir: Path
    objectstore: Worker

    def token(self, user: str, project: str) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
        request = urllib.request.Request(f"{self.api_url}/v3/auth/tokens", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.headers["X-Subject-Token"]

    def project_keys(self, name: str | None = None) -> Keys:
        """A new project with a member, and an EC2 credential issued to it by Identity's OS-EC2 API."""
        name = name or f"s3-{uuid.uuid4().hex[:8]}"
        user_id, project_id = add_user(self.db, name, "member", PASSWORD)
        token = self.token(f"{name}-user", name)
        request = urllib.request.Request(f"{self.api_url}/v3/users/{user_id}/credentials/OS-EC2",
                                         json.dumps({"tenant_id": project_id}).encode(),
                                         {"Content-Type": "application/json", "X-Auth-Token": token})
        with urllib.request.urlopen(request, timeout=30) as answer:
            credential = json.load(answer)["credential"]
        return Keys(credential["access"], credential["secret"], user_id, project_id, name)

    def client(self, keys: Keys, **config):
        """A boto3 S3 client with default settings but the endpoint (and ``config`` overrides)."""
        return boto3.session.Session().client(
            "s3", endpoint_url=self.s3_url, region_name=REGION, aws_access_key_id=keys.access,
            aws_secret_access_key=keys.secret, config=botocore.config.Config(**config) if config else None)

    def aws_env(self, keys: Keys) -> dict[str, str]:
        """The environment of an aws CLI run with ``keys`` and no user configuration."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return env | {"AWS_ACCESS_KEY_ID": keys.access, "AWS_SECRET_ACCESS_KEY": keys.secret,
                      "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
                      "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials")}

    def aws(self, keys: Keys, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the aws CLI (the venv's ``aws`` script) against the objectstore."""
        argv = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", self.s3_url, *args]
        done = subprocess.run(argv, env=self.aws_env(keys), capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            pytest.fail(f"aws {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def restart_objectstore(self) -> None:
        """Stop the objectstore (SIGTERM) if it runs, start it again and wait until it listens."""
        stop_worker(self.objectstore)
        before = self.objectstore.log().count(LISTENING)
        self.objectstore = start_worker("fabric.cmd.objectstore", self.conf, self.objectstore.log_path,
                                        "fabric-objectstore")
        wait_until(lambda: self.objectstore.log().count(LISTENING) > before, timeout=60,
                   what="the objectstore to listen again", workers=[self.objectstore])


@pytest.fixture(scope="session")
def stack(database_servers, tmp_path_factory):
    """fabric-api and fabric-objectstore processes on one PostgreSQL database and RabbitMQ vhost,
    for the whole session; stopped by their own PIDs after."""
    problem = broker_problem()
    if problem:
        unavailable(problem)
    workdir = tmp_path_factory.mktemp("objectstore")
    db = Database(create_schema_database(database_servers))
    vhost = RabbitVhost()
    vhost.create()
    api_port, s3_port = free_port(), free_port()
    data_dir = workdir / "objects"
    conf = workdir / "fabric.conf"
    conf.write_text(f"""[DEFAULT]
host = s3test
data_dir = {workdir / 'data'}
[database]
url = {db.url.render_as_string(hide_password=False)}
[rpc]
transport_url = {vhost.url}
[api]
listen = 127.0.0.1
port = {api_port}
[objectstore]
listen = 127.0.0.1
port = {s3_port}
storage_dir = {data_dir}
virtual_host_suffix = s3.fabric.test
credential_cache_seconds = 0
workers = 2
""")
    bootstrap(db, PASSWORD)
    signing.generate(config.load(conf).signing_key_dir)
    api = start_worker("fabric.cmd.api", conf, workdir / "fabric-api.log", "fabric-api")
    objectstore = start_worker("fabric.cmd.objectstore", conf, workdir / "fabric-objectstore.log",
                               "fabric-objectstore")
    stack = Stack(db, conf, data_dir, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{s3_port}", workdir,
                  objectstore)
    try:
        api.wait_for_log("fabric API listening on", timeout=60)
        objectstore.wait_for_log(LISTENING, timeout=60)
        yield stack
    finally:
        stop_worker(api)
        stop_worker(stack.objectstore)
        vhost.delete()
        db.dispose()


@pytest.fixture
def keys(stack) -> Keys:
    """EC2 keys of a fresh project."""
    return stack.project_keys()


@pytest.fixture
def s3(stack, keys):
    """A default boto3 S3 client of a fresh project."""
    return stack.client(keys)


@pytest.fixture
def bucket(s3) -> str:
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
