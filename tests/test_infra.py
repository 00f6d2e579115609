"""The cluster manifests (infra/k8s) and worker images (infra/docker), checked offline.

What is checked: every core Kubernetes object, and every Ray pod template, against the
Kubernetes OpenAPI schemas bundled in `kubernetes-validate` (strict: unknown fields fail); the
RayCluster / RayJob / RayCronJob fields against the field names of KubeRay's v1 CRDs (v1.7.0,
listed below); that the three Ray manifests agree; that S3 keys only come from a Secret; that the
nightly entrypoint's commands parse and load their config; that the images copy files that exist
and install pinned requirements only.
What cannot be checked here: that a cluster accepts the objects (no API server, no KubeRay
operator), that the images build (no Docker, no CUDA), that the GPU nodes' taints and the storage
class exist.
"""
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "infra" / "k8s"
K8S_VERSION = "1.33.0"

# Field names of KubeRay's ray.io/v1 CRDs at v1.7.0 (ray-operator/config/crd/bases/).
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy",
               "entrypoint", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources",
               "jobId", "managedBy", "metadata", "preRunningDeadlineSeconds", "rayClusterSpec",
               "runtimeEnvYAML", "shutdownAfterJobFinishes", "submissionMode",
               "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"}
RAYCLUSTER_SPEC = {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling",
                   "gcsFaultToleranceOptions", "headGroupSpec", "headServiceAnnotations",
                   "historyServerOptions", "managedBy", "networkPolicy", "rayVersion", "suspend",
                   "tlsOptions", "upgradeStrategy", "workerGroupSpecs"}
HEAD_GROUP = {"enableIngress", "headService", "ingressOptions", "labels", "rayStartParams",
              "resources", "serviceType", "template"}
WORKER_GROUP = {"groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas",
                "numOfHosts", "priority", "rayStartParams", "replicas", "resources",
                "scaleStrategy", "suspend", "template"}
RAYCRONJOB_SPEC = {"jobTemplate", "schedule", "suspend", "timeZone"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}


def documents():
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def by_kind(kind):
    return [doc for _, doc in documents() if doc["kind"] == kind]


def groups(cluster_spec):
    return [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]


def test_core_objects_validate_against_the_kubernetes_schemas():
    core = [(name, doc) for name, doc in documents() if doc["apiVersion"] in ("v1",)]
    assert {doc["kind"] for _, doc in core} >= {"ServiceAccount", "ConfigMap",
                                                "PersistentVolumeClaim"}
    for name, doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_wrong_field_in_a_core_object_is_caught():
    sa = dict(by_kind("ServiceAccount")[0], automountToken=False)  # the real one: ...ServiceAccountToken
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sa, K8S_VERSION, strict=True)


def test_ray_pod_templates_validate_as_kubernetes_pod_templates():
    for cluster in by_kind("RayCluster"):
        for group in groups(cluster["spec"]):
            pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                            "metadata": {"name": group.get("groupName", "head")},
                            "template": group["template"]}
            kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def test_kuberay_fields_exist_in_the_v1_crds():
    for cluster in by_kind("RayCluster"):
        assert cluster["apiVersion"] == "ray.io/v1"
        assert set(cluster["spec"]) <= RAYCLUSTER_SPEC
        assert set(cluster["spec"]["headGroupSpec"]) <= HEAD_GROUP
        for group in cluster["spec"]["workerGroupSpecs"]:
            assert set(group) <= WORKER_GROUP
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    (job,) = by_kind("RayJob")
    (cron,) = by_kind("RayCronJob")
    assert set(job["spec"]) <= RAYJOB_SPEC and set(cron["spec"]) <= RAYCRONJOB_SPEC
    assert set(cron["spec"]["jobTemplate"]) <= RAYJOB_SPEC
    assert job["spec"]["submissionMode"] in SUBMISSION_MODES
    assert re.fullmatch(r"(\S+ ){4}\S+", cron["spec"]["schedule"])  # five cron fields


def test_the_nightly_job_the_schedule_and_the_cluster_agree():
    (cluster,) = by_kind("RayCluster")
    (job,) = by_kind("RayJob")
    (cron,) = by_kind("RayCronJob")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    assert cron["spec"]["jobTemplate"] == job["spec"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_gpu_stages_fit_the_gpu_worker_group():
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    (cluster,) = by_kind("RayCluster")
    gpus = [int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                .get("nvidia.com/gpu", 0)) for g in cluster["spec"]["workerGroupSpecs"]]
    assert max(gpus) >= 1
    gpu_stages = {k: r for k, r in cfg.ray.resources.items() if r.num_gpus}
    assert {"asr", "tokenize"} <= set(gpu_stages)
    assert all(r.num_gpus <= max(gpus) for r in gpu_stages.values())


def test_s3_keys_come_only_from_a_secret():
    for name, doc in documents():
        text = yaml.safe_dump(doc)
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), name  # no AWS access key literal
    for cluster in by_kind("RayCluster"):
        for group in groups(cluster["spec"]):
            for container in group["template"]["spec"]["containers"]:
                env = {e["name"]: e for e in container["env"]}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert "value" not in env[key] and "secretKeyRef" in env[key]["valueFrom"]
    for dockerfile in (ROOT / "infra" / "docker").glob("Dockerfile.*"):
        assert "AWS_SECRET_ACCESS_KEY" not in dockerfile.read_text()


def test_the_nightly_commands_parse_and_load_their_config():
    from pipeline.cli import _parser
    from pipeline.config import load_config

    (job,) = by_kind("RayJob")
    outer = shlex.split(job["spec"]["entrypoint"])
    assert outer[:2] == ["bash", "-c"]
    commands = [shlex.split(c) for c in outer[2].split("&&")]
    assert [c[:2] for c in commands] == [["audioverse", "run"], ["audioverse", "release"]]
    for argv in commands:
        args = _parser().parse_args(argv[1:])
        cfg = load_config(ROOT / args.config, args.overrides)
        assert cfg.input.uri.startswith("s3://") and cfg.output.uri.startswith("s3://")
    # A night's ids are stable through the day (no time of day in them), so a retried job
    # (backoffLimit) resumes the night's run instead of starting another one.
    run_id = commands[0][commands[0].index("--run-id") + 1]
    release_id = commands[1][commands[1].index("--release-id") + 1]
    for ident in (run_id, release_id):
        assert "$(date -u +%Y-%m-%d)" in ident and "%H" not in ident and "%s" not in ident
    assert job["spec"]["backoffLimit"] >= 1


def test_images_copy_existing_paths_and_install_pinned_requirements():
    for dockerfile in (ROOT / "infra" / "docker").glob("Dockerfile.*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}"
    gpu = (ROOT / "infra" / "docker" / "requirements-gpu.txt").read_text().splitlines()
    pins = [ln for ln in gpu if ln and not ln.startswith(("#", "-"))]
    assert pins and all("==" in ln for ln in pins)
    assert any(ln.startswith("torchaudio==") for ln in pins)  # the Higgs tokenizer needs it
