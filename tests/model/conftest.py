import pytest

from model.graphed import float32_precision


@pytest.fixture
def ieee_float32():
    """float32 products without TF32, so that a comparison with float64 measures the method, not TF32."""
    with float32_precision("ieee"):
        yield
