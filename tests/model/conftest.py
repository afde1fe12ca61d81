import pytest
import torch


@pytest.fixture
def ieee_float32():
    """float32 products without TF32, so that a comparison with float64 measures the method, not TF32."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "ieee"
    yield
    matmul.fp32_precision, conv.fp32_precision = before
