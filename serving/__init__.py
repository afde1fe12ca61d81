"""The predictor: a KServe custom model that serves the released ONNX classifier, with Prometheus metrics.

``python -m serving --model releases/latest`` (see ``docs/serving.md``). One module per job: ``release`` reads
and verifies a release folder, ``inputs`` decodes and validates requests, ``budget`` bounds what one request may
cost before any work, ``binary`` checks the v2 binary tensor extension, ``model`` is the ``kserve.Model``,
``outputs`` formats responses, ``metrics``/``drift`` are the Prometheus side, ``middleware`` the REST request guard
and accounting, ``routes`` the REST routes served (all others refused), ``dataplane`` the gRPC accounting and
readiness, ``repository`` the model repository (read-only unless enabled, REST and gRPC), ``feedback`` the
label-feedback route, ``auth`` its bearer token, ``clients`` who sent a request and the per-client rate limit,
``logs`` log lines that cannot be forged, ``server`` the wiring onto KServe's ModelServer, ``load`` the load
generator. ``__main__`` is KServe's command line extended with ours.
"""
