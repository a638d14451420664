"""CUDA checks (marked ``gpu``: skipped without CUDA) and the reduced-size run of bench/gpu_check.py (not marked:
it runs everywhere, on the CPU, so the prepared GPU check cannot rot).

The gpu tests compare the project's device-aware code on CUDA with its CPU results: device selection and bf16
autocast (``acft.device``), the linear probe (``acft.probes.linear``), the encoders' embeddings
(``acft.models``, tiny random AST and wav2vec2 models), and the kNN probe's neighbours against a float64
brute force computed on the GPU (the search itself runs on the CPU: it has no device argument).
bench/gpu_check.py runs them with ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


def _embeddings(n_train=3000, n_query=500, dim=64, n_classes=10, noise=3.0, seed=0):
    """bench_knn.py's generator (class centres plus a shared offset plus noise)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_knn import make_data

    return make_data(n_train, n_query, dim=dim, n_classes=n_classes, noise=noise, seed=seed)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_device_selection_and_bf16_autocast_on_cuda():
    from acft.device import autocast, select_device

    assert select_device("auto").type == "cuda"
    assert select_device("cuda") == torch.device("cuda")
    assert select_device("cuda:0").index == 0
    x = torch.randn(8, 8, device="cuda")
    with autocast(torch.device("cuda")):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(torch.device("cuda"), enabled=False):
        assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu")):  # the CPU stays float32 (reproducible)
        assert (x.cpu() @ x.cpu()).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_linear_probe_on_cuda_matches_cpu():
    from acft.probes.linear import linear_probe

    train, train_y, test, test_y = _embeddings()
    val, val_y = train[:500], train_y[:500]
    records = {}
    for device in ("cpu", "cuda"):
        rows = linear_probe(
            train[500:], train_y[500:], val, val_y, test, test_y, multilabel=False,
            weight_decay_grid=[1e-4, 1e-2], max_iter=100, seed=0, device=device,
        )  # fmt: skip
        records[device] = {row["metric"]: row["value"] for row in rows}
    assert records["cuda"]["chosen_weight_decay"] == records["cpu"]["chosen_weight_decay"]
    assert abs(records["cuda"]["accuracy"] - records["cpu"]["accuracy"]) <= 0.01  # <= 5 of 500 clips
    assert records["cuda"]["accuracy"] > 0.5  # well above chance (0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_knn_neighbours_equal_a_float64_brute_force_on_cuda():
    from acft.probes.knn import predict_single
    from acft.probes.knn_search import nearest_neighbours

    train, train_y, query, _ = _embeddings()
    k = 5
    found = nearest_neighbours(train, query, [k])
    bank = torch.nn.functional.normalize(torch.as_tensor(train, dtype=torch.float64, device="cuda"), dim=1)
    queries = torch.nn.functional.normalize(torch.as_tensor(query, dtype=torch.float64, device="cuda"), dim=1)
    sim, index = (queries @ bank.T).topk(k, dim=1)
    assert torch.equal(found.index[k], index.cpu())
    np.testing.assert_allclose(found.sim[k].numpy(), sim.cpu().numpy(), rtol=0, atol=1e-12)
    predicted = predict_single(found, k, train_y, 10, weighted=False, temperature=1.0)
    assert predicted.shape == (len(query),)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("family", ["ast", "wav2vec2_group"])
def test_encoder_embeddings_on_cuda_match_cpu(tmp_path, family):
    from acft.device import autocast
    from acft.models import build_encoder

    from tiny_models import save_tiny_model

    entry = save_tiny_model(family, tmp_path / family)
    cfg = {
        "layer": "last", "pooling": "mean", "window_s": None, "hop_s": None, "trust_remote_code": False,
        "revision": None, "freeze": [], "normalize_level": None, "trim_silence": False, "extractor": {}, **entry,
    }  # fmt: skip
    encoder = build_encoder(cfg)
    generator = torch.Generator().manual_seed(0)
    waveforms = 0.1 * torch.randn(4, 16000, generator=generator)
    lengths = torch.tensor([16000, 12000, 9000, 16000])
    with torch.inference_mode():
        cpu = encoder.embed_layers(waveforms, lengths)["last"]
        encoder.to("cuda")
        cuda = encoder.embed_layers(waveforms.cuda(), lengths.cuda())["last"]
        with autocast(torch.device("cuda")):
            bf16 = encoder.embed_layers(waveforms.cuda(), lengths.cuda())["last"].float()
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-3, atol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(bf16.cpu(), cpu, dim=1)
    assert bool((cosine > 0.99).all()), cosine


def test_gpu_check_reduced_runs_on_cpu_and_writes_sane_json(tmp_path):
    """bench/gpu_check.py --size reduced on the CPU: every phase runs and its numbers are sane."""
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--size", "reduced", "--device", "cpu", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "goal AST" in done.stdout
    record = json.loads(out.read_text())
    assert record["size"] == "reduced" and record["device"]["type"] == "cpu"
    assert record["device"]["peak_bf16_tflops"] is None
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["transformers"]
    # transformers' defaults are still the published AST and wav2vec2-base architectures
    assert record["configs"]["ast"]["defaults_equal_published"], record["configs"]["ast"]
    assert record["configs"]["wav2vec2"]["defaults_equal_published"], record["configs"]["wav2vec2"]
    assert record["trainer_pieces"] == "acft.tune.trainer"
    # the gpu tests ran in their subprocess and skipped (no CUDA here); nothing failed
    tests = record["gpu_tests"]
    assert tests["returncode"] == 0 and tests.get("failed", 0) == 0 and tests["skipped"] >= 4, tests
    errors = {
        key: value["error"] for key, value in record.items() if isinstance(value, dict) and "error" in value
    }
    assert not errors, errors
    for name in ("ast", "wav2vec2"):
        tune = record[f"tune_{name}"]
        assert tune["steps_done"] == tune["steps_asked"] >= 1
        assert tune["clips_per_s"] > 0 and tune["step_flops"] > 0 and tune["loss_finite"]
        assert tune["peak_memory_mib"] is None  # CPU: no CUDA allocator to read
        assert tune["fraction_of_peak"] is None  # no known peak for a CPU
        extract = record[f"extract_{name}"]
        assert extract["embeddings_finite"] and extract["embedding_dim"] == 32
        for batch in extract["batches"]:
            assert batch["flops_per_batch"] > 0 and batch["clips_per_s"] > 0 and batch["tflops"] > 0
        encoder = record[f"project_encoder_{name}"]
        assert encoder["clips_per_s"] > 0 and encoder["embeddings_finite"] and encoder["embedding_dim"] == 32
    # the AST training step is about 3x its forward pass (backward ~2x), per clip
    ast_forward = record["extract_ast"]["batches"][0]
    per_clip_forward = ast_forward["flops_per_batch"] / ast_forward["batch_size"]
    per_clip_step = record["tune_ast"]["step_flops"] / record["tune_ast"]["batch_size"]
    assert 2.0 < per_clip_step / per_clip_forward < 4.0
    assert record["goal_ast_40pct_of_peak_at_batch_64"] is None
    knn, linear = record["knn"], record["linear"]
    assert knn["agreement_with_sklearn"] == 1.0  # exact search, same ties: identical predictions
    assert knn["torch_float32_topk_agreement_with_ours"] >= 0.95
    assert knn["ours_accuracy"] > 1.5 / knn["n_classes"]  # well above chance
    assert abs(linear["accuracy_difference_points"]) <= 2.0
    assert linear["agreement_with_sklearn"] >= 0.9 and linear["ours_cpu_s"] > 0
    assert 0 < record["seconds"] < 120


def test_gpu_check_refuses_the_full_size_without_cuda(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "bench"))
    with pytest.raises(SystemExit):
        gpu_check.main(["--size", "full", "--device", "cpu", "--out", str(tmp_path / "x.json")])
    assert gpu_check.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops("NVIDIA L40S") == 362.0
    assert gpu_check.peak_tflops("Some Future GPU") is None
