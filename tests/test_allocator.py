"""keep_freed_memory(): after it, freeing and re-allocating a large block reuses the same pages (few new
page faults), where glibc's defaults map fresh pages every time; METALEARN_MALLOC=system opts out.
Each case runs in a child process, whose allocator starts from glibc's defaults."""
import os
import subprocess
import sys

import pytest

# Minor page faults of re-allocating and filling a 64 MiB block 4 times, before and after the call.
FAULTS = """
import resource, sys, torch, metalearn_ext

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

faults()  # warm up: the first fill faults its pages in either way
before = min(faults() for _ in range(3))
applied = metalearn_ext.keep_freed_memory()
assert metalearn_ext.keep_freed_memory() is applied  # idempotent
faults()  # the heap grows to hold the block (its pages fault in then)
# the fewest of 3 rounds: the heap may still grow past small allocations once (seen: one block, in one round)
print(applied, metalearn_ext.allocator.keeps_freed_memory(), before, min(faults() for _ in range(3)))
"""

PAGES = 64 * 2**20 // 4096  # pages of one block


def _child(malloc: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "METALEARN_MALLOC" and not k.startswith("MALLOC_")}
    if malloc is not None:
        env["METALEARN_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    applied, reported, before, after = _child()
    assert applied == "True" and reported == "True"
    # glibc's defaults: every re-allocation maps fresh pages (4 blocks of PAGES pages each)
    assert int(before) >= 3 * PAGES, before
    assert int(after) < PAGES // 4, (before, after)  # reused, where glibc's defaults fault in all 4 blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_metalearn_malloc_system_leaves_glibc_alone():
    applied, reported, before, after = _child("system")
    assert applied == "False" and reported == "False"
    assert int(after) >= 3 * PAGES, after
