"""The run's device: torchrun ranks on cuda:LOCAL_RANK, critics following the generator.

The CUDA branch is exercised on machines without CUDA by injecting CUDA's presence into
`milr.devices.run_device` / `init_distributed`; the 2-rank test is a real gloo process group.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from milr import MilrUserError
from milr.devices import current_run_device, resolve_device, run_device, use_device


def test_run_device_resolution():
    assert run_device(None, rank=3, cuda_available=True) == "cuda:3"
    assert run_device("auto", rank=0, cuda_available=True) == "cuda:0"
    assert run_device("cuda", rank=1, cuda_available=True) == "cuda:1"
    assert run_device("cuda:0", rank=1, cuda_available=True) == "cuda:0"  # explicit wins
    assert run_device(None, rank=2, cuda_available=False) == "cpu"
    assert run_device("cpu", rank=2, cuda_available=True) == "cpu"
    with pytest.raises(MilrUserError, match="CUDA is not available"):
        run_device("cuda", rank=0, cuda_available=False)


def test_run_device_reads_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert run_device(None, cuda_available=True) == "cuda:5"
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(MilrUserError, match="LOCAL_RANK='x'"):
        run_device(None, cuda_available=True)


def test_critics_follow_the_run_device():
    from milr.critics import _openclip
    from milr.critics.geneval import GenEvalCritic

    critic = GenEvalCritic(weights="yolov8n.yaml")  # device=auto
    assert current_run_device() is None
    with use_device("cuda:1"):
        # what every built-in critic resolves device=auto / a bare cuda to
        assert _openclip.resolve_device(critic.params.device, critic.name) == "cuda:1"
        assert resolve_device("cuda") == "cuda:1"
        with use_device(None):
            assert current_run_device() == "cuda:1"
    assert current_run_device() is None
    with use_device("cpu"):
        assert resolve_device(None) == "cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, device: str | None, queue) -> None:
    import os

    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    from milr.bench.distributed import init_distributed, rank_device
    from milr.critics import _openclip
    from milr.critics.geneval import GenEvalCritic
    from milr.devices import use_device

    ctx = init_distributed(device, timeout_s=60, cuda_available=True)
    try:
        generator_device = rank_device(device, ctx)
        with use_device(generator_device):
            critic = GenEvalCritic(weights="yolov8n.yaml")
            critic_device = _openclip.resolve_device(critic.params.device, critic.name)
        seen = [None] * world
        import torch.distributed as dist

        dist.all_gather_object(seen, (rank, generator_device, critic_device, ctx.backend))
        if rank == 0:
            queue.put(sorted(seen))
        ctx.barrier()
    finally:
        ctx.close()


@pytest.mark.parametrize("device", [None, "cuda"])
def test_two_ranks_each_on_their_local_gpu(device):
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        pytest.skip("one visible GPU: cuda:1 does not exist for rank 1")
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, device, queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    seen = queue.get()
    # without CUDA the injected presence decides the devices and the group uses gloo
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    assert seen == [(0, "cuda:0", "cuda:0", backend), (1, "cuda:1", "cuda:1", backend)]


def test_run_milr_places_and_reuses_a_generator_by_name():
    from milr import generator as gen_module
    from milr import run_milr

    first = run_milr("shapes", "shapes", "a photo of a red circle", device="cpu", dtype="fp32",
                     max_steps=1)  # fmt: skip
    loaded = dict(gen_module._LOADED)
    second = run_milr("shapes", ["shapes"], "a photo of a blue square", device="cpu",
                      dtype="float32", max_steps=1)  # fmt: skip
    assert list(loaded) == [("shapes", "cpu", "torch.float32")]
    assert loaded == gen_module._LOADED  # the same generator object, not loaded twice
    assert first.n_steps <= 1 and second.n_steps <= 1
    with pytest.raises(MilrUserError, match="dtype='fp128'"):
        run_milr("shapes", "shapes", "a photo of a red circle", device="cpu", dtype="fp128")


def test_judge_device_map_auto_needs_accelerate(monkeypatch):
    """accelerate is a dependency; an environment without it (simulated: the import is
    blocked) gets one line naming the fix, before anything loads."""
    import sys

    from transformers.utils import is_accelerate_available

    from milr.critics.judge import JudgeCritic

    is_accelerate_available()  # transformers caches its answer: ask before blocking the import
    monkeypatch.setitem(sys.modules, "accelerate", None)  # find_spec answers None, as uninstalled
    judge = JudgeCritic(model="/nonexistent/judge", device_map="auto", device="cpu")
    with pytest.raises(MilrUserError, match="device_map=auto needs the accelerate package"):
        judge.prepare()


def test_judge_device_map_auto_loads_through_accelerate():
    """With accelerate (a dependency), device_map="auto" goes through accelerate's planner
    (transformers refuses it otherwise): without GPUs every layer lands on the CPU, and it
    scores."""
    pytest.importorskip("accelerate")
    import torch
    from PIL import Image
    from test_critic_judge import tiny_llava_dir

    from milr.critics.judge import JudgeCritic

    judge = JudgeCritic(model=str(tiny_llava_dir()), device_map="auto", device="cpu",
                        min_yes_no_share=1e-9)  # fmt: skip
    model, _ = judge.load()
    if not torch.cuda.is_available():
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    (result,) = judge.score_batch([Image.new("RGB", (32, 32), "red")], ["a red square"], [{}])
    assert 0.0 <= result.score <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_generator_and_hf_critic_load_straight_onto_the_gpu(tmp_path):
    """On a GPU the generator and a transformers critic load with device_map=<device> (no
    .to() after loading) and every tensor ends on the device asked for."""
    from milr.critics.vqa import VQACritic
    from milr.generator import load_generator
    from milr.testing import save_tiny_janus
    from milr.testing.tiny_vision import git_vqa

    gen = load_generator(str(save_tiny_janus(tmp_path / "janus")), device="cuda:0", dtype="fp32")
    assert {str(p.device) for p in gen.model.parameters()} == {"cuda:0"}
    critic = VQACritic(weights=str(git_vqa(tmp_path / "git")), device="cuda:0")
    critic.prepare()
    from milr.critics import _hf

    (bundle,) = [b for b in _hf._CACHE.values() if str(b.source).startswith(str(tmp_path))]
    assert {str(p.device) for p in bundle.model.parameters()} == {"cuda:0"}
