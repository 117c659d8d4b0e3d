"""Helpers shared by the GPU suite's benchmarks (scripts/bench/gpu_*.py): the device, timing that waits for the
device, measured matmul and copy peaks, the environment record, results written as they come (a section killed by
its time cap keeps what it measured), and a plain nanoGPT-style training loop to compare lmbench against.

Importing this module puts the repository root first on sys.path, so the benchmarks run from a checkout without
`pip install`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PACKAGES = ("torch", "transformers", "accelerate", "tokenizers", "sentencepiece", "safetensors", "numpy",
            "huggingface_hub", "omegaconf", "datasets", "wandb", "pandas", "pyarrow", "lmbench")


# ------------------------------------------------------------------------------------------ device and timing
def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued kernels (CUDA launches are asynchronous; a host timer alone measures the launch)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def timed_s(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of fn(), device work included."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


class Deadline:
    """Seconds left of a budget that started when this object was made."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ------------------------------------------------------------------------------------------ peaks
def matmul_size(dtype: torch.dtype, n: int, device: torch.device, max_seconds: float = 1.0, probe: int = 256) -> int:
    """`n`, halved (not below `probe`) while one n x n x n product in `dtype` would take more than `max_seconds` at
    the rate of a `probe`^3 product: on a CPU whose oneDNN has no bf16 path (AVX2 only) bf16 products run a
    reference kernel at about 1.4 GFLOP/s, where one 2048^3 product takes 12 s. `n` itself off the CPU."""
    if device.type != "cpu" or n <= probe:
        return n
    a = torch.randn(probe, probe).to(dtype)
    a @ a
    rate = 2 * probe**3 / min(timed_s(lambda: a @ a, device) for _ in range(3))
    while n > probe and 2 * n**3 / rate > max_seconds:
        n //= 2
    return n


def matmul_flops_per_s(dtype: torch.dtype, n: int, device: torch.device, reps: int = 10) -> float:
    """Best FLOP/s of an n x n x n matmul in `dtype` over `reps` timed batches (after a warm-up). On the CPU, size n
    with `matmul_size` first where the dtype may be slow."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 5 if device.type == "cuda" else 1
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(reps):
        seconds = timed_s(lambda: [a @ b for _ in range(inner)], device)
        best = max(best, inner * 2 * n**3 / seconds)
    return best


def copy_bytes_per_s(num_bytes: int, device: torch.device, reps: int = 10) -> float:
    """Best device memory bandwidth of `dst.copy_(src)`, counting the bytes read plus the bytes written."""
    src = torch.empty(num_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(timed_s(lambda: dst.copy_(src), device) for _ in range(reps))
    return 2 * src.numel() * 4 / best


def read_bytes_per_s(num_bytes: int, device: torch.device, reps: int = 10) -> float:
    """Best device memory read bandwidth: a sum over `num_bytes` of float32 (each byte read once, nothing
    written), the rate a memory-bound matrix-vector product can reach at most."""
    src = torch.empty(num_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    src.sum()
    best = min(timed_s(lambda: src.sum(), device) for _ in range(reps))
    return src.numel() * 4 / best


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls on or off inside the block (off: a true fp32 peak), the previous setting restored after.
    Only the legacy flag (allow_tf32) is touched: torch raises when the legacy and the new (fp32_precision) API
    are mixed in one process."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32 = before


# ------------------------------------------------------------------------------------------ environment
def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """GPU, driver, CUDA, torch and the library versions: the facts gpu.md opens with."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                            "versions": {p: version(p) for p in PACKAGES}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        capability = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                    gpu_memory_gb=props.total_memory / 1e9, capability=capability, cudnn=torch.backends.cudnn.version())
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    return info


# ------------------------------------------------------------------------------------------ results as they come
class Results:
    """A JSON file rewritten (atomically) after every change, so a killed benchmark leaves what it measured."""

    def __init__(self, path: Path, **fields: Any) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"complete": False, **fields}
        self.save()

    def set(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def append(self, key: str, row: dict[str, Any]) -> None:
        self.data.setdefault(key, []).append(row)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def command_line(script: str, argv: list[str] | None) -> str:
    """How the benchmark was started, for its report: `python scripts/bench/<script> ARGS...`."""
    return "python " + " ".join(shlex.quote(a) for a in [f"scripts/bench/{script}", *(argv or sys.argv[1:])])


def write_report(out: Path | str, report: dict[str, Any], markdown: str) -> None:
    """`out`.json (the report) and `out`.md (its text), the folder made first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(f"wrote {out.with_suffix('.md')} and .json")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------ plain nanoGPT loop
# The training benchmarks' activation on both sides: lmbench's default and nanoGPT's `nn.GELU()`, the exact (erf)
# GELU. On the CPU it is also the cheap one: for a (4096, 1536) bf16 tensor, forward + backward take 2.2 ms exact
# and 8.0 ms with the tanh approximation (torch's vectorised tanh is slow there).
ACTIVATION = "gelu"
APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh"}  # lmbench's activation name -> F.gelu's `approximate`


class NanoBlock(nn.Module):
    def __init__(self, d: int, num_heads: int, activation: str = ACTIVATION) -> None:
        super().__init__()
        self.num_heads, self.approximate = num_heads, APPROXIMATE[activation]
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)  # fused q, k, v
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, C))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate=self.approximate))


class NanoGPT(nn.Module):
    """nanoGPT's model: learned positions, pre-LN blocks, tied embeddings; the same parameters as lmbench's
    `transformer` at the same shape (and the same function with the same `activation`)."""

    def __init__(self, vocab_size: int, num_layers: int, num_heads: int, d_model: int, block_size: int,
                 activation: str = ACTIVATION) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(NanoBlock(d_model, num_heads, activation) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.size(1), device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


def nanogpt_runner(model: nn.Module, batches: list[dict[str, Tensor]], device: torch.device, lr: float = 1e-3,
                   compile_model: bool = False) -> Callable[[int], None]:
    """nanoGPT's training step: batches already on the device, autocast bf16, fused AdamW, clip 1.0."""
    model.to(device).train()
    on_device = [{k: v.to(device) for k, v in b.items()} for b in batches]
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=fused)
    forward = torch.compile(model) if compile_model else model

    def step(index: int) -> None:
        batch = on_device[index]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = forward(batch["input_ids"])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step
