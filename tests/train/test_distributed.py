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


def test_es_one_vs_two_processes_identical(tmp_path):
    single = MetaTrainer(_cfg())
    losses = [single.step().meta_loss for _ in range(K)]
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    two = torch.load(out)
    assert two["losses"] == losses
    assert torch.equal(two["theta"], single.model.parameter_vector().detach())
