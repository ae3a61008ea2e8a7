"""Widgets shared by the tabs that differ from Gradio's in one rule each."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import gradio as gr
from gradio import component_meta
from gradio.components.number import Number


@contextmanager
def _without_stub_files() -> Iterator[None]:
    """Gradio writes a ``.pyi`` stub beside the module of every component class it sees defined (for custom
    components' editor hints); a subclass that only changes a method needs none, and the source tree must not
    change when the page is imported."""
    with mock.patch.object(component_meta, "create_or_modify_pyi", lambda *args, **kwargs: None):
        yield


with _without_stub_files():

    class FieldSlider(gr.Slider):
        """A slider whose value Easel's request checks, not Gradio.

        Gradio refuses a value outside the slider's range with its own "Value 300 is greater than maximum value
        255.", which names no field. Such a value reaches a slider only from a pasted infotext (another
        preprocessor's threshold, a range this version does not allow); with this slider it reaches the request,
        whose message names the field (``controlnet_units[0].threshold_a``) and its range. What the user drags or
        types is still held to the range by the browser, which draws it as an ordinary slider. (A subclass, not a
        patched instance: Gradio rebuilds a component from its class when an event updates it.)
        """

        def get_block_name(self) -> str:
            return "slider"

        def preprocess(self, payload: Any) -> Any:
            if payload is None:
                return None
            return Number.round_to_precision(payload, self.precision)
