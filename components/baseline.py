"""baseline: plain cross-entropy training on the noisy labels.

Its model is the reference MLNT must beat, the frozen feature network for MLNT's neighbour search, and
MLNT's warm start. Writes ``artifacts/baseline/model.pt`` (the epoch best on the validation set), ``final.pt``
(the last epoch), ``metrics.json``, ``history.json`` and resumable ``checkpoints/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.common.allocator import retain_freed_memory
from components.common.atomic import atomic_set, prepare_output, write_json
from components.common.checkpoints import checkpoint_store, drop_stale_checkpoints
from components.common.config import CONFIG_FILE, as_record, cli
from components.common.curves import publish_curves, write_curves, write_history
from components.common.model_file import TRAINED_ON, save_model, seeded_network
from components.common.parallel import data_parallel
from components.common.pretrained import imagenet_weights
from components.common.splits import load_split, training_digest
from components.common.steps import FOLDERS
from components.common.telemetry import reports
from model.networks import NETWORKS, Network
from model.trainer import TrainConfig, train

INGEST_OUT = FOLDERS["ingest"]
NOISE_OUT = FOLDERS["noise"]

OUT = FOLDERS["baseline"]


@dataclass(frozen=True)
class BaselineConfig(TrainConfig):
    """The baseline step's config: ``TrainConfig`` with the defaults of the pipeline's run (params.yaml; a test
    keeps the two equal), the network and its initialisation."""

    epochs: int = 15  # long enough for CE to memorise much of the noise, as users train to convergence
    augment: bool = False
    eval_every: int = 50  # steps between validations (the CIFAR-10 code: 50)
    network: Network = "small_cnn"
    pretrained: bool = True  # start from ImageNet weights where the network has them (resnet50)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.network not in NETWORKS:
            raise ValueError(f"Unknown network {self.network!r}. Valid: {', '.join(NETWORKS)}")


@reports("baseline", lambda m: {"accuracy": {"val": {"baseline": m["val_accuracy"]}}})
def run(config: BaselineConfig, *, ingest: Path = INGEST_OUT, noise: Path = NOISE_OUT, out: Path = OUT,
        checkpoints: Path | None = None) -> dict:
    """Reads ``ingest``'s training images and ``noise``'s ``labels.npz`` (``load_split``); trains CE and writes
    ``model.pt`` (the best validation), ``final.pt`` (both record ``training_digest``, which mlnt checks),
    ``metrics.json``, ``history.json`` and the curves under ``live/`` to ``out`` (the main process); returns the
    metrics. ``checkpoints``: a folder shared across runs for the resumable
    checkpoints (default ``out/checkpoints``)."""
    retain_freed_memory()  # a training process: reuse freed memory rather than fault in fresh pages
    prepare_output(out, step="baseline")  # a folder that cannot take the outputs fails now, not after training
    train_data, val_data, meta = load_split(ingest, noise, workers=config.workers, augment=config.augment,
                                            crop_padding=config.crop_padding)
    trained_on = training_digest(ingest, noise)
    store = checkpoint_store(out, config, [trained_on], code="components.baseline", root=checkpoints)
    weights = imagenet_weights(config.network) if config.pretrained else None
    net = seeded_network(config.network, meta, config.seed, pretrained=weights)
    with data_parallel(config) as group:
        result = train(config, net, train_data, val_data=val_data, store=store, group=group,
                       on_validation=lambda history, evaluations: write_curves(out, history, evaluations))
    final = result.history[-1]
    metrics = {"best_epoch": result.best_epoch,
               "val_accuracy": result.best_score, "best_step": result.best_step,
               "final_val_accuracy": final["val_accuracy_student"], "epochs": len(result.history)}
    if group.is_main:
        _write(Path(out), result, metrics, network=config.network, meta={**meta, TRAINED_ON: trained_on},
               config=config)
        drop_stale_checkpoints(store, shared=checkpoints is not None)
    return metrics


def _write(out: Path, result, metrics: dict, *, network: str, meta: dict, config: BaselineConfig) -> None:
    """The step's files as one ``atomic_set``: a failure while writing any of them leaves the previous ones."""
    with atomic_set():
        save_model(out / "model.pt", result.best_state, network=network, meta=meta,
                   extra={"best_epoch": result.best_epoch})
        save_model(out / "final.pt", result.student.state_dict(), network=network, meta=meta)
        write_history(out, result)
        write_json(out / CONFIG_FILE, as_record(config))
        write_json(out / "metrics.json", metrics)
        publish_curves(out)  # live/ in the same burst of renames as metrics.json


def _main(configs: dict) -> None:
    m = run(configs["baseline"])
    print(f"baseline: best validation accuracy {m['val_accuracy']:.4f} at epoch {m['best_epoch']}, "
          f"final {m['final_val_accuracy']:.4f} -> {OUT}")


main = cli("baseline", {"baseline": BaselineConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
