"""The predictor: a KServe custom model that serves the released ONNX classifier, with Prometheus metrics.

``python -m serving --model releases/latest`` (see ``docs/serving.md``). One module per job: ``release`` reads
and verifies a release folder, ``inputs`` decodes and validates requests, ``binary`` checks the v2 binary tensor
extension, ``model`` is the ``kserve.Model``, ``outputs`` formats responses, ``metrics``/``drift`` are the
Prometheus side, ``middleware`` the REST request guard and accounting, ``dataplane`` the gRPC accounting,
``repository`` the read-only model repository (REST and gRPC), ``feedback`` the label-feedback route, ``server``
the wiring onto KServe's ModelServer, ``load`` the load generator. ``__main__`` is KServe's command line extended
with ours.
"""
