"""`autlearn pretrain` under torchrun: two gloo processes on the tiny nwp preset."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from cloud_pretrain.checkpoint import load_checkpoint


def test_two_processes_train_one_model_with_ddp(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "autlearn", "pretrain", "--task", "nwp", "--preset", "tiny", "--out", str(tmp_path),
               "--epochs", "1", "--steps-per-epoch", "6"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) on cpu" in done.stdout
    assert done.stdout.count("epoch 1/1: train loss") == 1  # only rank 0 reports
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and 0 < metrics["val_accuracy"] < 1
    _, meta = load_checkpoint(tmp_path / "checkpoint.pt")
    assert meta["metrics"]["world_size"] == 2
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    assert state["run"]["world_size"] == 2 and state["epoch"] == 1
