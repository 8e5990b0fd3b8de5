"""`milr.devices`: one resolver of device and dtype spellings for generators and critics."""

from __future__ import annotations

import pytest

from milr.devices import DTYPE_NAMES, dtype_name, resolve, resolve_device, resolve_dtype
from milr.errors import MilrUserError

torch = pytest.importorskip("torch")

SPELLINGS = [
    ("bf16", "bfloat16"), ("bfloat16", "bfloat16"), ("BF16", "bfloat16"),
    ("fp16", "float16"), ("float16", "float16"), ("half", "float16"),
    ("fp32", "float32"), ("float32", "float32"), ("float", "float32"),
    ("fp64", "float64"), ("float64", "float64"), ("double", "float64"),
    ("torch.bfloat16", "bfloat16"), ("auto", "auto"), (None, "auto"),
]  # fmt: skip


@pytest.mark.parametrize("spelling,name", SPELLINGS)
def test_every_spelling_has_one_canonical_name(spelling, name):
    assert dtype_name(spelling) == name
    if name != "auto":
        assert resolve_dtype(spelling, "cpu") is getattr(torch, name)


def test_torch_dtypes_pass_through():
    assert dtype_name(torch.float16) == "float16"
    assert resolve_dtype(torch.bfloat16, "cpu") is torch.bfloat16


def test_auto_is_bf16_on_cuda_and_fp32_elsewhere():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype(None, "cuda:0") is torch.bfloat16
    assert DTYPE_NAMES[0] == "auto"


@pytest.mark.parametrize("bad", ["fp8", "int8", "bfloat", "", "float128"])
def test_unknown_dtype_is_one_line_naming_value_and_spellings(bad):
    with pytest.raises(MilrUserError) as exc:
        dtype_name(bad, "--dtype")
    msg = str(exc.value)
    assert "\n" not in msg and repr(bad) in msg and "bf16/bfloat16" in msg
    assert msg.startswith("--dtype: ")


def test_allowed_subset_is_enforced_with_its_own_list():
    assert dtype_name("fp16", "geneval", allowed=("float32", "float16")) == "float16"
    with pytest.raises(MilrUserError, match=r"dtype='bf16' is not supported; use one of float32"):
        dtype_name("bf16", "geneval", allowed=("float32", "float16"))


def test_float64_is_for_cpu_only():
    assert resolve_dtype("float64", "cpu") is torch.float64
    with pytest.raises(MilrUserError, match="float64 is for exact CPU runs"):
        resolve_dtype("fp64", "cuda")


def test_devices():
    assert resolve_device("cpu") == "cpu"
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None) == resolve_device("auto") == resolve_device("") == auto
    with pytest.raises(MilrUserError, match="not a torch device") as exc:
        resolve_device("gpu0", "judge critic")
    assert str(exc.value).startswith("judge critic: device='gpu0'")
    assert resolve("cpu", "bf16") == ("cpu", torch.bfloat16)


def test_cuda_without_cuda_is_refused_before_anything_loads():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the refusal path cannot be exercised")
    with pytest.raises(MilrUserError, match="CUDA is not available") as exc:
        resolve_device("cuda:1")
    assert "\n" not in str(exc.value)


def test_critics_accept_the_same_spellings(tmp_path):
    from milr import get_registry

    registry = get_registry()
    judge = registry.create_critic("judge", model="/nonexistent/qwen", dtype="bf16")
    assert judge.config()["dtype"] == "bfloat16"
    clip = registry.create_critic("clip", weights="random", dtype="half")
    assert clip.config()["dtype"] == "float16"
    with pytest.raises(MilrUserError, match="'dtype'='fp8' must be one of float32") as exc:
        registry.create_critic("clip", weights="random", dtype="fp8")
    assert "\n" not in str(exc.value)
    yolo = tmp_path / "yolo.pt"
    yolo.write_bytes(b"")  # construction only checks that the file exists
    geneval = registry.create_critic("geneval", weights=str(yolo), dtype="fp16")
    assert geneval.config()["dtype"] == "float16"
    with pytest.raises(MilrUserError, match="'dtype'='bf16' must be one of float32, float16 "):
        registry.create_critic("geneval", weights=str(yolo), dtype="bf16")
