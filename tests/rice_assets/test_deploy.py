"""deploy/ validated offline: the Kubernetes manifests against the Kubernetes OpenAPI schemas
(`kubernetes-validate`, pinned, schemas bundled), the Kubernetes objects inside the Helm values and the
executor YAML against the same schemas (wrapped in a Pod), the executor config against dagster-k8s's own
schema, and fold_models' GPU op tag against dagster-k8s's tag parser. No cluster and no `helm` here."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dagster_k8s.job import get_user_defined_k8s_config

from rice_assets.assets.training import fold_models
from rice_assets.executors import K8S_CONFIG_TAG, load_executor

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = "1.30"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def validate(document: dict[str, Any]) -> None:
    """Strict: unknown fields are errors too."""
    kubernetes_validate.validate(document, KUBERNETES, strict=True)


def pod(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "rice", **container}]}
    if volumes is not None:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def camel(snake: dict[str, Any]) -> dict[str, Any]:
    """dagster-k8s accepts snake_case keys; the Kubernetes schema names them in camelCase."""
    return {"".join([k.split("_")[0], *(w.title() for w in k.split("_")[1:])]): v for k, v in snake.items()}


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        validate(document)


def test_validation_catches_a_broken_manifest() -> None:
    broken = yaml.safe_load((DEPLOY / "k8s" / "lake.yaml").read_text())
    broken["spec"]["accessModes"] = "ReadWriteMany"  # a string, not a list
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_helm_values_kubernetes_objects_are_valid() -> None:
    values = yaml.safe_load((DEPLOY / "values-dagster.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "rice_assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert (DEPLOY.parent / Path(env["RICE_EXECUTOR"]).relative_to("/opt/rice")).is_file()
    container = {
        "env": deployment["env"],
        "envFrom": [{"configMapRef": ref} for ref in deployment["envConfigMaps"]]
        + [{"secretRef": ref} for ref in deployment["envSecrets"]],
        "volumeMounts": deployment["volumeMounts"],
        "resources": deployment["resources"],
    }
    validate(pod(container, deployment["volumes"]))
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    run_container = {"volumeMounts": launcher["volumeMounts"], **launcher["runK8sConfig"]["containerConfig"]}
    validate(pod(run_container, launcher["volumes"]))
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"] + launcher["volumes"]}
    assert claims == {"rice-lake"}  # the claim deploy/k8s/lake.yaml creates
    assert values["postgresql"]["enabled"] is False and values["dagsterDaemon"]["runCoordinator"]["enabled"]


def test_k8s_executor_config_is_valid_for_dagster_k8s_and_kubernetes() -> None:
    executor_yaml = DEPLOY / "executor-k8s.yaml"
    assert load_executor(executor_yaml).name == "k8s"  # dagster-k8s's schema accepted it
    config = yaml.safe_load(executor_yaml.read_text())["execution"]["config"]
    mounts = [camel(m) for m in config["volume_mounts"]]
    step = config["step_k8s_config"]["container_config"]
    validate(pod({"volumeMounts": mounts, **step}, config["volumes"]))
    volume_names = {v["name"] for v in config["volumes"]}
    values = yaml.safe_load((DEPLOY / "values-dagster.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert volume_names == {v["name"] for v in launcher["volumes"]}  # steps see the lake where runs do


def test_fold_models_pod_requests_one_gpu() -> None:
    assert K8S_CONFIG_TAG in fold_models.op.tags
    parsed = get_user_defined_k8s_config(fold_models.op.tags)  # how dagster-k8s reads the step's tags
    resources = parsed.container_config["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    validate(pod({"resources": resources}))
    assert fold_models.op.pool == "gpu"
