"""The errors every step reports in one line: ``DataError`` (an input is not what it promises) and
``torch_load_error`` (what ``torch.load`` refused, without its advice)."""

from __future__ import annotations

import re


class DataError(ValueError):
    """An input file does not hold what its format promises."""


# torch's own words around the reason: advice to retry with weights_only=False (which would run the file's code,
# what the refusal prevents), to file an issue, to read the docs, and guesses about how a file got corrupt.
_TORCH_ADVICE = re.compile(r"^Weights only load failed\..*?trusted source\.|Please file an issue.*?WeightsUnpickler "
                           r"error:|Check the documentation of torch\.load.*$|This is an internal miniz error.*$",
                           re.S)


def torch_load_error(err: BaseException) -> str:
    """What ``torch.load`` found wrong, in one line."""
    text = str(err)
    refused = "refused by the weights-only loader: " if text.startswith("Weights only load failed") else ""
    return refused + " ".join(_TORCH_ADVICE.sub(" ", text).split())
