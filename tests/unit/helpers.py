"""Helpers shared by the unit tests (`from .helpers import render_text`)."""

from ceemsnet.common.metrics import TextRenderer


def render_text(families) -> str:
    """The families in the Prometheus text format, as the exporter serves them (a fresh renderer)."""
    return b"".join(TextRenderer().render_parts(families)).decode()
