"""Data parallelism on CPU with gloo, two processes spawned by the tests: the gathered loss and
synchronised BatchNorm equal their single-process versions, and torchrun training equals one
process, also across a kill and a resume."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cellclr.embeddings import EMBEDDINGS
from cellclr.learning import distributed
from cellclr.learning.distributed import (
    CPUSyncBatchNorm,
    barrier,
    gather,
    init_distributed,
    world_from_env,
)
from cellclr.learning.embed import embed
from cellclr.learning.losses import nt_xent
from cellclr.learning.saved_model import MODEL
from cellclr.learning.train import CHECKPOINT, LOG
from cellclr.pipeline import train  # with the label-free selection of train.select_every
from cellclr.store.import_crops import import_crops
from tests.helpers import TINY_OVERRIDES, make_crop_files, tiny_config, wait_for

HERE = Path(__file__).parent
SHORT = timedelta(seconds=5)


def _ranks(rank: int, size: int, init: str, out: str) -> None:
    """One process of the loss and BatchNorm check: saves its loss and gradients."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    z1, z2, x = torch.load(Path(out) / "inputs.pt", weights_only=True)
    n = len(z1) // size
    mine = slice(rank * n, (rank + 1) * n)
    a, b = z1[mine].clone().requires_grad_(), z2[mine].clone().requires_grad_()
    loss = nt_xent(a, b, 0.2, gather=gather, rank=rank)
    loss.backward()
    bn = CPUSyncBatchNorm(3).train()
    xm = x[mine].clone().requires_grad_()
    y = bn(xm)
    (y * torch.arange(1.0, 4.0).view(1, 3, 1, 1)).sum().backward()
    result = {"loss": loss, "ga": a.grad, "gb": b.grad, "y": y, "gx": xm.grad}
    result["running"] = torch.stack([bn.running_mean, bn.running_var])
    torch.save({k: v.detach() for k, v in result.items()}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_gathered_loss_and_sync_batchnorm_equal_one_process(tmp_path):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    x = torch.randn(8, 3, 4, 4, generator=g) * 3 + 1
    torch.save((z1, z2, x), tmp_path / "inputs.pt")
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ranks, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]

    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    whole = nt_xent(a, b, 0.2)
    whole.backward()
    torch.testing.assert_close((r[0]["loss"] + r[1]["loss"]) / 2, whole.detach())
    # each process's gradient is the whole batch's, for the rows it owns, times the processes
    torch.testing.assert_close(torch.cat([r[0]["ga"], r[1]["ga"]]) / 2, a.grad)
    torch.testing.assert_close(torch.cat([r[0]["gb"], r[1]["gb"]]) / 2, b.grad)

    bn = nn.BatchNorm2d(3).train()
    xs = x.clone().requires_grad_()
    y = bn(xs)
    (y * torch.arange(1.0, 4.0).view(1, 3, 1, 1)).sum().backward()
    torch.testing.assert_close(torch.cat([r[0]["y"], r[1]["y"]]), y.detach())
    torch.testing.assert_close(torch.cat([r[0]["gx"], r[1]["gx"]]), xs.grad)
    torch.testing.assert_close(r[0]["running"], torch.stack([bn.running_mean, bn.running_var]))


def torchrun(*args: str, nproc: int = 2, script: Path | None = None, extra_env=None):
    """``torchrun -m cellclr ARGS`` (or a script); a failure is expected with ``extra_env``."""
    entry = [str(script)] if script else ["-m", "cellclr"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={nproc}", *entry, *args]
    env = {**os.environ, **(extra_env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0 or extra_env, done.stderr[-3000:]
    return done


def sets(*extra: str) -> list[str]:
    return [arg for o in [*TINY_OVERRIDES, *extra] for arg in ("--set", o)]


def weights(folder: Path) -> dict:
    return torch.load(folder / MODEL, weights_only=True)["encoder"]


def assert_close_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def store4(tmp_path_factory) -> Path:
    """112 cells on 4 plates: 3 steps of a global batch of 32."""
    folder = tmp_path_factory.mktemp("dist")
    images, cells = make_crop_files(folder / "input", n_plates=4)
    return import_crops(images, cells, folder / "store", ["DNA", "Tubulin", "Actin"])


# LARS, not Adam, where one process is compared with two: Adam's first steps move each weight by
# about lr * sign(gradient), so float rounding in a near-zero gradient can flip a weight's step;
# LARS scales whole layers, so equal gradients (to rounding) give equal weights.
LARS = ["train.optimizer='lars'", "train.lr=0.5"]


def test_two_processes_train_like_one(store4, tmp_path):
    over = ["train.epochs=1", "train.batch_size=32", "train.warmup_epochs=0", *LARS]
    over.append("train.select_every=1")  # under torchrun, each process embeds half the cells
    one = train(store4, tmp_path / "one", tiny_config(*over))
    torchrun("train", "--crops", str(store4), "--out", str(tmp_path / "two"), *sets(*over))
    assert_close_weights(weights(one), weights(tmp_path / "two"), atol=1e-5)
    logs = [json.loads((f / LOG).read_text()) for f in (one, tmp_path / "two")]
    assert logs[0]["replicate_map"] is not None
    measures = {k for k in logs[0] if k not in ("loss", "lr", "images_per_s", "seconds")}
    assert "replicate_map" in measures and measures <= set(logs[1])
    for measure in measures:
        assert logs[0][measure] == pytest.approx(logs[1][measure], abs=2e-4), measure


def test_a_killed_two_process_training_resumes_exactly(store4, tmp_path):
    over = sets("train.epochs=3", "train.batch_size=32")
    whole, out = tmp_path / "whole", tmp_path / "killed"
    torchrun("train", "--crops", str(store4), "--out", str(whole), *over)
    done = torchrun(
        "train", "--crops", str(store4), "--out", str(out), *over,
        script=HERE / "dist_kill.py", extra_env={"KILL_AT_EPOCH": "2"},
    )  # fmt: skip
    assert done.returncode != 0 and not out.exists()
    assert torch.load(tmp_path / "killed.partial" / CHECKPOINT, weights_only=True)["epoch"] == 1
    torchrun("train", "--crops", str(store4), "--out", str(out), *over, "--resume")
    assert_close_weights(weights(whole), weights(out), atol=1e-6)


def test_resume_with_another_number_of_processes(store4, tmp_path):
    over = ["train.epochs=2", "train.batch_size=32", *LARS]
    whole = train(store4, tmp_path / "whole", tiny_config(*over))
    out = tmp_path / "mixed"
    done = torchrun(
        "train", "--crops", str(store4), "--out", str(out), *sets(*over),
        script=HERE / "dist_kill.py", extra_env={"KILL_AT_EPOCH": "2"},
    )  # fmt: skip
    assert done.returncode != 0
    train(store4, out, tiny_config(*over))  # one process continues two's run
    assert_close_weights(weights(whole), weights(out), atol=1e-5)


def test_global_batch_must_divide_over_the_processes(store4, tmp_path):
    done = torchrun(
        "train", "--crops", str(store4), "--out", str(tmp_path / "m"), *sets("train.batch_size=15"),
        extra_env={"EXPECT": "failure"},
    )  # fmt: skip
    assert done.returncode != 0 and "must divide evenly over the 2 processes" in done.stderr


def test_two_process_embed_equals_one_and_run_works(store4, tmp_path):
    cfg = tiny_config("embed.batch_size=16")
    model = train(store4, tmp_path / "model", cfg)
    one = embed(model, store4, tmp_path / "one", cfg)
    args = ["embed", "--model", str(model), "--crops", str(store4), "--out", str(tmp_path / "two")]
    done = torchrun(*args, *sets("embed.batch_size=16"))
    assert done.stdout.count("embeddings:") == 1  # the main process alone prints
    a = pd.read_parquet(one / EMBEDDINGS)
    b = pd.read_parquet(tmp_path / "two" / EMBEDDINGS)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-6)
    assert not list((tmp_path / "two").glob(".features-*"))
    torchrun("run", "--crops", str(store4), "--out", str(tmp_path / "run"), *sets())
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["nsc"]["total"] == 6
    manifest = json.loads((tmp_path / "run" / "model" / "stage.json").read_text())
    assert manifest["processes"] == 2 and manifest["backend"] == "gloo"


def test_waits_for_the_main_process_outlast_the_timeout(store4, tmp_path):
    """Collectives time out after train.dist_timeout (5 s here), but the others wait as long as
    the main process works alone: here 15 s while it writes the embeddings and again while it
    profiles and evaluates, after which everyone leaves the process group together."""
    out = tmp_path / "run"
    slow = "cellclr.learning.embed:_join_parts,cellclr.pipeline:_profile_and_evaluate"
    done = torchrun(
        "run", "--crops", str(store4), "--out", str(out), *sets("train.dist_timeout=5"),
        script=HERE / "dist_slow.py", extra_env={"SLOW": slow, "SLOW_SECONDS": "15"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "eval" / "metrics.json").read_text())["nsc"]["total"] == 6
    for rank in (0, 1):  # nobody left while the main process was still evaluating
        assert json.loads((tmp_path / f"left-{rank}.json").read_text()) == {"main_done": True}


def _timeouts(rank: int, init: str, out: str) -> None:
    """Rank 1 waits at ``barrier`` while rank 0 works 8 s (longer than the 5 s timeout), from
    the moment rank 1 says it is there: it passes. Then rank 1 waits at the default group's
    barrier, which rank 0 never joins: it times out."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="-", MASTER_PORT="0")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=SHORT)
    world = world_from_env()
    outcome = {}
    for name, wait in [("barrier", lambda: barrier(world)), ("default", dist.barrier)]:
        waiting, done = Path(out) / f"waiting-{name}", Path(out) / f"done-{name}"
        if rank == 0:
            wait_for(waiting.exists, f"rank 1 at the {name} barrier")
            if name == "barrier":
                time.sleep(8)  # rank 1 waits longer than the timeout
            else:  # rank 0 never comes (a safety timeout if rank 1's wait never ends)
                wait_for(done.exists, "rank 1's wait at the default barrier to end")
                outcome[name] = "not joined"
                continue
        else:
            waiting.touch()
        try:
            wait()
            outcome[name] = "passed"
        except RuntimeError:
            outcome[name] = "timed out"
        if rank == 1:
            done.touch()
    (Path(out) / f"timeouts-{rank}.json").write_text(json.dumps(outcome))


def test_barrier_has_no_timeout_but_collectives_have(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_timeouts, args=(init, str(tmp_path)), nprocs=2, join=True)
    waited = json.loads((tmp_path / "timeouts-1.json").read_text())
    assert waited == {"barrier": "passed", "default": "timed out"}


def test_the_process_group_gets_the_gpu_and_the_timeout(monkeypatch):
    env = dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="h", MASTER_PORT="1")
    monkeypatch.setattr(os, "environ", {**os.environ, **env})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "_wait_group", None)
    calls = {}

    def init_process_group(backend, timeout=None, device_id=None):
        calls["init"] = (backend, timeout, device_id)

    def new_group(backend=None, timeout=None):
        calls["wait"] = (backend, timeout)
        return "wait group"

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(dist, "new_group", new_group)
    world, device = init_distributed("cuda", timeout=5.0)
    assert (world.rank, device) == (1, torch.device("cuda", 1))
    assert calls["init"] == ("nccl", timedelta(seconds=5), torch.device("cuda", 1))
    assert calls["wait"] == ("gloo", distributed.WAIT)
    assert distributed.WAIT.days >= 1

    def older(backend, timeout=None):  # torch < 2.3 had no device_id
        calls["init"] = (backend, timeout)

    monkeypatch.setattr(dist, "init_process_group", older)
    init_distributed("cuda", timeout=5.0)
    assert calls["init"] == ("nccl", timedelta(seconds=5))


@pytest.mark.parametrize("method", ["simclr", "dino"])
def test_one_step_in_two_processes_equals_one_process(store4, tmp_path, method):
    """One AdamW step over the whole store (112 cells, one global batch), from the same
    weights: the gradients (Adam's first moment, 0.1 g) and every BatchNorm's running statistics
    (the encoder's, the projection head's, DINO's teacher's) equal the single-process ones up to
    float rounding. The weights differ only where a gradient is at rounding level: Adam's first
    step is lr * g / |g| (test_optim's test_adam_turns_rounding_noise_into_whole_steps...)."""
    lr = 1e-3
    over = ["train.epochs=1", "train.batch_size=112", "train.warmup_epochs=0", f"train.lr={lr}"]
    over += [f"train.method='{method}'", "dino.out_dim=64", "dino.local_size=8"]
    train(store4, tmp_path / "one", tiny_config(*over))
    torchrun("train", "--crops", str(store4), "--out", str(tmp_path / "two"), *sets(*over))
    one, two = (torch.load(tmp_path / f / CHECKPOINT, weights_only=True) for f in ("one", "two"))
    stats = [k for k in one["model"] if "running_" in k]
    assert len(stats) >= 20
    for k in stats:
        torch.testing.assert_close(one["model"][k], two["model"][k], atol=1e-5, rtol=1e-5, msg=k)
    weights = [k for k, v in one["model"].items() if v.is_floating_point() and k not in stats]
    trained = [k for k in weights if not k.startswith("teacher.") and k != "center"]
    # the optimiser's order: the decayed (matrices, kernels), then the others
    trained.sort(key=lambda k: one["model"][k].ndim <= 1)
    for i, k in enumerate(trained):
        g1, g2 = (ck["optimizer"]["state"][i]["exp_avg"] / 0.1 for ck in (one, two))
        dg = (g1 - g2).abs()
        assert dg.max() <= 1e-4 * g1.abs().max() + 1e-12, k
        dw = (one["model"][k] - two["model"][k]).abs()
        assert dw.max() <= 2 * lr * 1.001, k
        moved = dw > 0.01 * lr  # a step changed by a percent or more: its gradient is noise
        assert (g1.abs()[moved] <= 200 * dg[moved] + 1e-8).all(), k
