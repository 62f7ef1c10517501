"""Scale-out pieces that run on one machine: Dask extraction with local processes, the vLLM
tensor-parallel setting, and the deployment files (parsed and validated by Prefect itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.extract_pdfs import dask_runner, extract_pdfs
from tasks.documents.reading import find_pdfs, read_pdf
from tasks.questions.llm import make_writer
from tasks.core.settings import Settings
from tests.questions.test_llm_backends import fake_vllm  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_dask_extraction_in_local_processes_matches_the_pipelines_reader(tmp_path):
    pdfs = find_pdfs(REPO / "data" / "pdf")[:3]
    folder = tmp_path / "pdfs"
    folder.mkdir()
    for p in pdfs:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.pdf").write_bytes(b"not a pdf at all")
    out = tmp_path / "extracted.jsonl"

    result = extract_pdfs.with_options(task_runner=dask_runner(workers=2))(pdf_dir=folder, output=out)

    assert result == {"files": 4, "skipped": 1}
    rows = {r["source"]: r for r in map(json.loads, out.read_text().splitlines())}
    for p in pdfs:
        assert rows[p.name]["pages"] == read_pdf(p)[0]
    assert "pages" not in rows["broken.pdf"] and rows["broken.pdf"]["skipped"]


def test_vllm_tensor_parallel_size_reaches_vllm(fake_vllm):  # noqa: F811
    with make_writer(Settings(llm_backend="vllm", vllm_tensor_parallel_size=2)) as writer:
        writer.complete(["p"])
    assert fake_vllm["llm_kwargs"]["tensor_parallel_size"] == 2


@pytest.mark.parametrize("path", ["prefect.yaml", "deploy/kubernetes/prefect.yaml"])
def test_deployment_files_validate(path):
    """Parsed with Prefect's own prefect.yaml model; triggers and settings validated as at deploy/run time."""
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.cli.deploy._triggers import DeploymentTriggerAdapter

    spec = PrefectYamlModel.model_validate(yaml.safe_load((REPO / path).read_text()))
    assert spec.deployments
    for dep in spec.deployments:
        assert dep.entrypoint == "flows/finetune_bce.py:finetune_bce"
        Settings.model_validate(dep.parameters["settings"])
        assert dep.concurrency_limit.limit == 1
        for trigger in dep.triggers:
            t = DeploymentTriggerAdapter.validate_python(trigger)
            assert t.expect == {"bce.pdfs.changed"}
        assert dep.schedules and dep.schedules[0].cron


def test_kubernetes_template_requests_a_gpu_and_defines_its_variables():
    template = json.loads((REPO / "deploy/kubernetes/gpu-base-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    spec = yaml.safe_load((REPO / "deploy/kubernetes/prefect.yaml").read_text())
    used = set(spec["deployments"][0]["work_pool"]["job_variables"])
    assert used <= set(template["variables"]["properties"])
