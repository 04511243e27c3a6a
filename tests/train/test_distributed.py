"""1 process and 2 gloo processes give identical parameters after k ES steps for the same seed."""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metalearn_ext.train.runner import MetaTrainer
from tests.train.helpers import tiny_config

K = 2


def _cfg():
    # 5 pairs: the two ranks get 3 and 2, so the uneven split is covered too
    return tiny_config(train={"method": "es", "population": 10})


def _worker(rank, world, port, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = MetaTrainer(_cfg())
        losses = [trainer.step().meta_loss for _ in range(K)]
        if rank == 0:
            torch.save({"theta": trainer.model.parameter_vector().detach(), "losses": losses}, out_path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world, path):
    mp.spawn(_worker, args=(world, _free_port(), str(path)), nprocs=world, join=True)
    return torch.load(path)


def test_es_one_vs_two_processes_identical(tmp_path):
    # Both runs in fresh processes: once (1 in ~9 runs) a reference computed in the pytest process
    # itself, after the other train tests, differed in the 8th digit of the first fitness.
    one, two = _run(1, tmp_path / "one.pt"), _run(2, tmp_path / "two.pt")
    assert two["losses"] == one["losses"]
    assert torch.equal(two["theta"], one["theta"])
    assert one["losses"][0] != one["losses"][1]  # the steps did something
