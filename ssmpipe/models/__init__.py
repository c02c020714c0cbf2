"""Models: one module per SSM layer kind, the deep sequence model around them, and packing."""

from ssmpipe.models.packing import PackedModel
from ssmpipe.models.s4d import S4D
from ssmpipe.models.sequence import SequenceModel, build_model, init_from_data

__all__ = ["S4D", "SequenceModel", "build_model", "init_from_data", "PackedModel"]
