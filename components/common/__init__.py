"""What the steps share: configs and the command line (``config``), atomic writes (``atomic``), reading an earlier
step's outputs (``artifacts``), the step table (``steps``), errors (``errors``), the data a step trains and
evaluates on (``splits``, ``streaming``), the model file format (``model_file``), checkpoints (``checkpoints``),
the training processes (``parallel``), curves (``curves``), ImageNet weights (``pretrained``), temperature scaling
(``calibration``), memory reuse (``allocator``) and telemetry (``telemetry``); and two tools that are not steps:
``data`` (``make data``) and ``report`` (``make results``)."""
