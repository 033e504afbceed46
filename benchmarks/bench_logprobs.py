"""Peak extra memory and time of ``course_lib.sequence_logps`` against the naive log_softmax + gather.

    python benchmarks/bench_logprobs.py                     # B=8, T=256, V=32000: fp32 logits ~262 MB
    python benchmarks/bench_logprobs.py --dtypes float32 --repeats 9

Memory (CPU): each (method, mode, dtype, allocator) runs in a fresh subprocess, which builds the
logits, resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs`` resets VmHWM to the
current RSS; where that is not allowed it falls back to ``ru_maxrss``), calls the method once, and
reports ``peak RSS - RSS before the call`` as a multiple of the logits' size. Twice: with
``MALLOC_MMAP_THRESHOLD_=131072`` (every large tensor its own mapping, returned when freed: the live
tensors' peak, what the target is about) and with glibc's default malloc (what a learner's process
shows: freed blocks below glibc's dynamic mmap threshold, up to 32 MiB, can stay in the heap). Modes:
``no_grad`` (forward
under ``torch.no_grad()``), ``autograd`` (forward with ``logits.requires_grad``, graph kept alive: what
the forward holds for backward), ``backward`` (forward + backward; the gradient itself is 1x).
Memory (CUDA, when available): ``torch.cuda.max_memory_allocated`` minus the allocation before the call.
Time: median of ``--repeats`` calls after one warm-up, both methods in this same process; the ratio
``library / naive`` is what to compare across machines (< 1 means the library is faster).
Targets (issue "Foundation"): the library's peak extra <= 0.3x the logits; the naive version ~2x.
Timings live here, never in tests.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.maths.logprobs import IGNORE_INDEX, sequence_logps  # noqa: E402

METHODS = ("library", "naive")
MODES = ("no_grad", "autograd", "backward")
TARGET_LIBRARY = 0.3
ALLOCATORS = {"tensors": {"MALLOC_MMAP_THRESHOLD_": "131072"}, "glibc default": {"MALLOC_MMAP_THRESHOLD_": None}}


def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The one-liner the library replaces: a full (B, T-1, V) log_softmax, then gather."""
    next_labels = labels[:, 1:]  # (B, T-1)
    scored = next_labels != IGNORE_INDEX
    safe_labels = torch.where(scored, next_labels, torch.zeros_like(next_labels))
    per_token = logits[:, :-1].log_softmax(-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (per_token * scored).sum(-1)


FUNCTIONS = {"library": sequence_logps, "naive": naive_sequence_logps}


def make_inputs(batch, seq_len, vocab, dtype, device="cpu", prompt_len=32):
    generator = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(batch, seq_len, vocab, generator=generator, device=device, dtype=torch.float32).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq_len), generator=generator, device=device)
    labels[:, :prompt_len] = IGNORE_INDEX
    for b in range(1, batch):  # right padding of 0, 8, 16, ... positions
        labels[b, max(prompt_len + 1, seq_len - 8 * b) :] = IGNORE_INDEX
    return logits, labels


def run_once(method, mode, logits, labels):
    """Call the method in the given mode; return what must stay alive until the peak is read."""
    fn = FUNCTIONS[method]
    if mode == "no_grad":
        with torch.no_grad():
            return fn(logits, labels)
    out = fn(logits, labels)
    if mode == "backward":
        out.sum().backward()
    return out


# --- memory, CPU: one fresh process per measurement -----------------------------------------------


def _status_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmHWM") <= _status_kb("VmRSS") + 4  # the reset took
    except OSError:
        return False


def child(method, mode, batch, seq_len, vocab, dtype_name):
    dtype = getattr(torch, dtype_name)
    # warm up torch's kernels and thread pool on a tiny input, so their one-time allocations do not count
    small_logits, small_labels = make_inputs(2, 40, 64, dtype, prompt_len=4)
    small_logits.requires_grad_(mode != "no_grad")
    run_once(method, mode, small_logits, small_labels)
    del small_logits, small_labels
    logits, labels = make_inputs(batch, seq_len, vocab, dtype)
    logits.requires_grad_(mode != "no_grad")
    logits_bytes = logits.numel() * logits.element_size()
    if _reset_peak():
        how = "VmHWM after clear_refs"
        before_kb = _status_kb("VmRSS")
        kept = run_once(method, mode, logits, labels)
        peak_kb = _status_kb("VmHWM")
    else:
        how = "ru_maxrss"
        before_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _status_kb("VmRSS"))
        kept = run_once(method, mode, logits, labels)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    held_kb = _status_kb("VmRSS") - before_kb  # still held once the call returned (autograd graph, grad)
    del kept
    print(
        json.dumps(
            {
                "extra_bytes": (peak_kb - before_kb) * 1024,
                "held_bytes": held_kb * 1024,
                "logits_bytes": logits_bytes,
                "how": how,
            }
        )
    )


def measure_cpu_memory(args, dtype_name):
    """{(allocator, method, mode): child result}, for glibc's default malloc and for a fixed mmap threshold.

    glibc serves allocations below its *dynamic* mmap threshold (which grows up to 32 MiB as large blocks
    are freed) from the heap and keeps freed heap memory, so RSS can stay above the tensors' own peak.
    ``MALLOC_MMAP_THRESHOLD_=131072`` fixes the threshold: every large tensor is its own mapping and
    is returned when freed, so VmHWM measures the live tensors' peak.
    """
    results = {}
    for allocator, extra_env in ALLOCATORS.items():
        env = {**os.environ, **extra_env}
        env = {key: value for key, value in env.items() if value is not None}  # None: unset
        for method in METHODS:
            for mode in MODES:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    method,
                    mode,
                    "--batch",
                    str(args.batch),
                    "--seq-len",
                    str(args.seq_len),
                    "--vocab",
                    str(args.vocab),
                    "--dtypes",
                    dtype_name,
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                results[allocator, method, mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# --- memory, CUDA -------------------------------------------------------------------------------


def measure_cuda_memory(args, dtype_name):
    dtype = getattr(torch, dtype_name)
    results = {}
    for method in METHODS:
        for mode in MODES:
            logits, labels = make_inputs(args.batch, args.seq_len, args.vocab, dtype, device="cuda")
            logits.requires_grad_(mode != "no_grad")
            run_once(
                method, mode, logits[:2, :40].detach().requires_grad_(mode != "no_grad"), labels[:2, :40]
            )  # warm-up
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            kept = run_once(method, mode, logits, labels)
            torch.cuda.synchronize()
            results["tensors", method, mode] = {
                "extra_bytes": torch.cuda.max_memory_allocated() - before,
                "held_bytes": torch.cuda.memory_allocated() - before,
                "logits_bytes": logits.numel() * logits.element_size(),
                "how": "torch.cuda.max_memory_allocated",
            }
            del kept, logits, labels
    return results


# --- time ---------------------------------------------------------------------------------------


def measure_time(args, dtype_name, device):
    dtype = getattr(torch, dtype_name)
    logits, labels = make_inputs(args.batch, args.seq_len, args.vocab, dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    results = {}
    for mode in ("no_grad", "backward"):
        for method in METHODS:
            times = []
            for repeat in range(args.repeats + 1):
                x = logits.detach().requires_grad_(mode != "no_grad")
                sync()
                start = time.perf_counter()
                run_once(method, mode, x, labels)
                sync()
                if repeat:  # the first call is a warm-up
                    times.append(time.perf_counter() - start)
                del x
            results[method, mode] = statistics.median(times)
    return results


# --- report -------------------------------------------------------------------------------------


def report(args, device):
    print(f"\n== device {device}: B={args.batch}, T={args.seq_len}, V={args.vocab} ==")
    for dtype_name in args.dtypes.split(","):
        memory = measure_cuda_memory(args, dtype_name) if device == "cuda" else measure_cpu_memory(args, dtype_name)
        allocators = sorted({key[0] for key in memory}, key=list(ALLOCATORS).index)
        first = memory[allocators[0], "library", "no_grad"]
        logits_bytes = first["logits_bytes"]
        print(f"\n-- {dtype_name}: logits {logits_bytes / 1e6:.0f} MB; memory from {first['how']}")
        for allocator in allocators:
            title = {
                "tensors": "live tensors" if device == "cuda" else "live tensors (MALLOC_MMAP_THRESHOLD_=131072)",
                "glibc default": "RSS with glibc's default malloc",
            }[allocator]
            print(
                f"{'peak extra memory, x logits':<30}{'library':>9}{'naive':>9}"
                f"   held after the call (library / naive)   [{title}]"
            )
            for mode in MODES:
                lib, naive = memory[allocator, "library", mode], memory[allocator, "naive", mode]
                print(
                    f"  {mode:<28}{lib['extra_bytes'] / logits_bytes:>8.2f}x"
                    f"{naive['extra_bytes'] / logits_bytes:>8.2f}x"
                    f"   {lib['held_bytes'] / logits_bytes:.2f}x / {naive['held_bytes'] / logits_bytes:.2f}x"
                )
        for mode in ("no_grad", "autograd"):
            ratio = memory["tensors", "library", mode]["extra_bytes"] / logits_bytes
            verdict = "meets" if ratio <= TARGET_LIBRARY else "MISSES"
            print(f"  library {mode} forward, live tensors: {ratio:.2f}x {verdict} the target <= {TARGET_LIBRARY}x")
        timing = measure_time(args, dtype_name, device)
        print(f"{'time, median of ' + str(args.repeats):<30}{'library':>9}{'naive':>9}   library / naive")
        for mode in ("no_grad", "backward"):
            lib, naive = timing["library", mode], timing["naive", mode]
            label = "forward (no_grad)" if mode == "no_grad" else "forward + backward"
            print(f"  {label:<28}{lib * 1e3:>7.0f}ms{naive * 1e3:>7.0f}ms   {lib / naive:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated torch dtypes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.batch, args.seq_len, args.vocab, args.dtypes)
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    report(args, "cpu")
    if torch.cuda.is_available():
        report(args, "cuda")
    else:
        print("\n(no CUDA device: CUDA part skipped)")


if __name__ == "__main__":
    main()
