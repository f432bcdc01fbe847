"""Run config launched from the UI cannot redirect credentials.

Dagster OSS has no login: whoever reaches the webserver can launch a run with any run config.
Endpoints and credentials are therefore not resource config at all (they come from the
deployment's environment and secrets), so a run config that names one is refused by the real
webserver's GraphQL API before any run exists, and a listener it points at hears nothing.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.error
import urllib.request

import pytest

from etl_assets_tests.test_schedule_daemon import artifacts_dir, dagster_service, prepare_dagster_home, wait_for

pytestmark = pytest.mark.e2e

REPOSITORY = {"repositoryLocationName": "etl_assets", "repositoryName": "__repository__"}
SELECTOR = {**REPOSITORY, "jobName": "daily_etl"}
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message } } }"""
VALIDATE = """query($selector: PipelineSelector!, $config: RunConfigData) {
  isPipelineConfigValid(pipeline: $selector, runConfigData: $config, mode: "default") {
    __typename ... on RunConfigValidationInvalid { errors { message } } } }"""
RUNS = "{ runsOrError { ... on Runs { results { runId } } } }"


class Listener:
    """A TCP port that counts every connection made to it: HTTP, MySQL or anything else."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self):
        self.server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    import json

    request = urllib.request.Request(
        url, json.dumps({"query": query, "variables": variables or {}}).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:  # GraphQL's own errors come as a 400 with a body
        document = json.load(exc)
    assert not document.get("errors"), document["errors"]
    return document["data"]


def location_loaded(url: str) -> bool:
    try:
        data = graphql(
            url,
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }",
        )
    except OSError:
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    return any(
        e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries
    )


def test_run_config_naming_an_endpoint_or_credential_is_refused_and_reaches_no_listener(clean_env):
    listener = Listener()
    target = f"127.0.0.1:{listener.port}"
    hostile = {
        "hubspot": {"api_base": f"http://{target}", "access_token": "attacker-token"},
        "database": {"url": f"mysql+pymysql://etl@{target}/etl", "password": "x"},
        "kaggle": {"api_token": "x", "key": "x"},
        "secrets": {"backend": "files", "secrets_dir": "/etc", "aws_secret_id": "other", "aws_secret_prefix": "x/"},
    }
    prepare_dagster_home(clean_env)
    port, out = free_port(), artifacts_dir("run_config")
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        with dagster_service(
            "dagster-webserver",
            "-m",
            "etl_assets",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            env=dict(os.environ),
            log_path=out / "webserver.log",
        ) as webserver:
            wait_for(
                "the code location to load in the webserver",
                lambda: location_loaded(url),
                timeout=120,
                alive=webserver,
                log_path=out / "webserver.log",
            )
            # The settings a run may tune are still accepted: the refusals below are about the fields.
            allowed = {"resources": {"hubspot": {"config": {"rate_limit": 50}}}}
            pipeline = {**REPOSITORY, "pipelineName": "daily_etl"}
            assert (
                graphql(url, VALIDATE, {"selector": pipeline, "config": allowed})["isPipelineConfigValid"]["__typename"]
                == "PipelineConfigValidationValid"
            )
            for resource, fields in hostile.items():
                for field, value in fields.items():
                    config = {"resources": {resource: {"config": {field: value}}}}
                    result = graphql(url, LAUNCH, {"p": {"selector": SELECTOR, "runConfigData": config}})["launchRun"]
                    assert result["__typename"] == "RunConfigValidationInvalid", (resource, field, result)
                    assert any(field in error["message"] for error in result["errors"]), result
            assert graphql(url, RUNS)["runsOrError"]["results"] == []
    finally:
        listener.close()
    assert listener.connections == 0
