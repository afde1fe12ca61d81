"""Where a cluster's training steps push their metrics: the Pushgateway address, the pipeline's name and the
credentials, as the Kubeflow pipeline and the manifests of k8s/ hand them to ``components.common.telemetry``.

Telemetry pushes a step's final metrics when ``MLNT_PUSHGATEWAY`` names a Pushgateway, under the grouping key
``{pipeline, step}`` with ``pipeline`` from ``MLNT_PIPELINE`` (default ``mlnt``), with basic authentication when
``MLNT_PUSHGATEWAY_USERNAME`` and a password (``MLNT_PUSHGATEWAY_PASSWORD_FILE`` or ``MLNT_PUSHGATEWAY_PASSWORD``)
are set. In the cluster they come from two objects of the namespace, each optional (without them nothing is pushed,
and every step runs as before):

- the address and the pipeline's name: the ConfigMap ``mlnt-pushgateway``, keys ``address`` (k8s/base generates it
  empty: no push) and ``pipeline`` (k8s/base: ``mlnt``; an overlay names its own, so that pipelines sharing one
  Pushgateway keep their own groups). The pods of k8s/ (TrainJob, PyTorchJob, toolbox) read them into
  ``MLNT_PUSHGATEWAY`` and ``MLNT_PIPELINE``; so does the weekly submitter, and ``python -m pipelines.run`` passes
  those variables on as the pipeline parameters ``pushgateway`` (``--pushgateway``) and ``pipeline``
  (``--pipeline``). Each KFP step takes ``pushgateway`` as an input, the steps that push ``pipeline`` too, and calls
  ``configure`` before its work: KFP 2.17's ``set_env_variable`` only takes a value known at compile time, and a
  ConfigMap read into a step's environment (``use_config_map_as_env``, optional) needs a KFP backend that knows the
  field ``optional``, which older backends refuse.
- the credentials: the Secret ``mlnt-pushgateway``, keys ``username`` and ``password``, created in the cluster, never
  in k8s/. The KFP steps that push mount it as files (``use_secret_as_volume``, optional, at ``SECRET_MOUNT``) and
  ``configure`` points telemetry at them, so that a password file is named only where the Secret exists (telemetry
  refuses an unreadable one and would push nothing). The pods of k8s/ take both keys as environment variables
  (``secretKeyRef``, optional): a manifest cannot name the file only when the Secret exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

from components.common.telemetry import (
    PASSWORD_FILE_ENV,
    PIPELINE_ENV,
    PUSHGATEWAY_ENV,
    USERNAME_ENV,
    pipeline_problem,
)

CONFIG_MAP, ADDRESS_KEY, PIPELINE_KEY = "mlnt-pushgateway", "address", "pipeline"  # k8s/base/kustomization.yaml
SECRET, USERNAME_KEY, PASSWORD_KEY = "mlnt-pushgateway", "username", "password"  # created in the cluster only
SECRET_MOUNT = "/var/run/secrets/mlnt-pushgateway"  # where the KFP steps that push mount the Secret
log = logging.getLogger(__name__)


def check_pipeline(name: str) -> None:
    """A ``ValueError`` for a pipeline name the pushed metrics cannot be grouped under (``telemetry.pipeline_problem``),
    raised where a run or a job is configured, before anything is submitted (telemetry itself would only warn)."""
    problem = pipeline_problem(name)
    if problem is not None:
        raise ValueError(f"pipeline (the name the pushed metrics are grouped under): {problem}")


def configure(address: str, *, pipeline: str = "", secret: str | Path | None = None,
              environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set telemetry's variables in ``environ`` (the process's by default) for a KFP step: ``MLNT_PUSHGATEWAY`` to
    ``address`` when one is given (empty: left as it is, no push in the cluster), ``MLNT_PIPELINE`` to ``pipeline``
    when one is given (empty: left as it is, telemetry's default ``mlnt``; telemetry refuses a name that is not a
    label value, with a warning, never a failed step); where the Secret is mounted at ``secret`` (default
    ``SECRET_MOUNT``), ``MLNT_PUSHGATEWAY_USERNAME`` to its user and ``MLNT_PUSHGATEWAY_PASSWORD_FILE`` to its
    password file, which telemetry reads when it pushes. Returns the names set. A Secret that is not there (optional)
    leaves the credentials unset; a user file that cannot be read is a warning, never a failed step."""
    environ = os.environ if environ is None else environ
    folder = Path(SECRET_MOUNT if secret is None else secret)
    found = {}
    if address:
        found[PUSHGATEWAY_ENV] = address
    if pipeline:
        found[PIPELINE_ENV] = pipeline
    user, password = folder / USERNAME_KEY, folder / PASSWORD_KEY
    if user.is_file():
        try:
            found[USERNAME_ENV] = user.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as err:
            log.warning("pushgateway: cannot read the user of the Secret %s at %s (%s); pushing without it",
                        SECRET, user, type(err).__name__)
    if password.is_file():
        found[PASSWORD_FILE_ENV] = str(password)
    environ.update(found)
    return sorted(found)
