"""FedAvg on Flower's simulation engine: the federated baseline the paper compares with.

A real Flower app (a `ClientApp` and a `ServerApp` with Flower's own `FedAvg` strategy) run by
`flwr.simulation.run_simulation` on its Ray backend: one virtual SuperNode per user, every user
in every round (`fraction_train=1`), each training the same head the device trains, on its own
data only, with the same SGD (autlearn/eval_head.py); the server averages the heads weighted by
the clients' numbers of examples. Flower's logs go to the log file, not the screen.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from autlearn.eval_head import Head


def _flower_logs_to_the_log_file() -> None:
    """Flower logs to the console through a handler of its own; hand its records to the root logger
    instead, whose handler is the toolkit's log file (autlearn/logs.py)."""
    logger = logging.getLogger("flwr")
    for handler in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.INFO)


def fedavg_head(initial: Head, client_files: list[Path], *, rounds: int, local_epochs: int, lr: float,
                batch: int, seed: int = 0) -> Head:
    """The global head after `rounds` of FedAvg over the clients whose features and labels are in
    `client_files` (one .npz with `x`, `y` per client)."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    if rounds < 1 or local_epochs < 1 or len(client_files) < 2:
        raise ValueError(f"FedAvg needs rounds >= 1, local epochs >= 1 and two clients or more, got {rounds}, "
                         f"{local_epochs}, {len(client_files)}")
    files = [str(f) for f in client_files]
    client_app = ClientApp()

    @client_app.train()
    def train(message: Message, context: Context) -> Message:
        client = int(context.node_config["partition-id"])
        with np.load(files[client]) as data:
            x, y = data["x"], data["y"]
        round_ = int(message.content["config"].get("server-round", 0))
        weight, bias = message.content["arrays"].to_numpy_ndarrays()
        head = Head(weight.copy(), bias.copy()).train(x, y, epochs=local_epochs, lr=lr, batch=batch,
                                                     seed=seed + 1000 * round_ + client)
        reply = RecordDict({"arrays": ArrayRecord([head.weight, head.bias]),
                            "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(reply, reply_to=message)

    server_app = ServerApp()
    final: list[np.ndarray] = []

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        n = len(files)
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord([initial.weight, initial.bias]),
                                num_rounds=rounds)
        final.extend(result.arrays.to_numpy_ndarrays())

    _flower_logs_to_the_log_file()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(files),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"logging_level": logging.ERROR, "log_to_driver": False}})
    if len(final) != 2:
        raise RuntimeError("the Flower simulation ended without a global model (see the log file)")
    return Head(final[0].astype(np.float32), final[1].astype(np.float32))
