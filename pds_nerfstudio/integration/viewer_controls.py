"""Live editing controls: shown in nerfstudio's web viewer, kept in the run's checkpoints.

The controls are the one source of the settings a user may change while an edit runs (target prompt,
guidance scale, a ratio range, pause). They start from the config; what the viewer changes is saved in
every checkpoint (as this module's extra state), so a resumed run continues with it.

Precedence of each value on resume: a flag typed now (on the resuming command line, whatever its value)
> a change made in the viewer (the saved value differs from the config it was saved under) > the run's config. A new edit never loads another run's controls: ``EditPipeline.load_source`` loads
only the source's model.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Dict, Optional, Tuple

from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerNumber, ViewerSlider, ViewerText
from torch import nn


class EditControls(nn.Module):
    """Viewer elements of an editing pipeline (nerfstudio installs them under "Custom Elements/controls",
    in the alphabetical order of the attribute names).

    Args:
        tgt_prompt: the target prompt to start with.
        guidance_scale: the classifier-free guidance scale to start with.
        range_name: what the two sliders set, e.g. "t ratio".
        ratio_range: their starting values.
        on_pause: called with True or False when editing is paused or resumed.
        typed_now: the names of the values (tgt_prompt, guidance_scale, ratio_range) typed on the command line of
            this run: on resume they win over a change made in the viewer, whatever their value.
    """

    def __init__(
        self,
        tgt_prompt: str,
        guidance_scale: float,
        range_name: str,
        ratio_range: Tuple[float, float],
        on_pause: Callable[[bool], None] = lambda paused: None,
        typed_now: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.prompt = ViewerText("Target prompt", tgt_prompt, cb_hook=self._prompt_changed, hint="what the edit should show")
        self.scale = ViewerNumber("Guidance scale", float(guidance_scale), hint="classifier-free guidance scale")
        self.range_from = ViewerSlider(f"{range_name} min", float(ratio_range[0]), 0.0, 1.0, 0.01)
        self.range_to = ViewerSlider(f"{range_name} max", float(ratio_range[1]), 0.0, 1.0, 0.01)
        self.pause = ViewerCheckbox("Pause editing", False, cb_hook=lambda element: on_pause(bool(element.value)))
        self.status = ViewerText("Status", "waiting for the first step", disabled=True)
        self._prompt = tgt_prompt
        self._configured = self.values()
        self._typed_now = frozenset(typed_now)

    def _prompt_changed(self, element: ViewerText) -> None:
        text = element.value.strip()
        if not text:  # an empty prompt is no edit: keep the last one
            element.value = self._prompt
            return
        self._prompt = text
        CONSOLE.log(f"Target prompt changed in the viewer: {text!r}")

    @property
    def tgt_prompt(self) -> str:
        return self._prompt

    @property
    def guidance_scale(self) -> float:
        return float(self.scale.value)

    @property
    def ratio_range(self) -> Tuple[float, float]:
        low, high = float(self.range_from.value), float(self.range_to.value)
        return (min(low, high), max(low, high))

    def show_status(self, text: str) -> None:
        self.status.value = text

    def values(self) -> Dict[str, Any]:
        """The values in use now, by name."""
        return {"tgt_prompt": self.tgt_prompt, "guidance_scale": self.guidance_scale, "ratio_range": self.ratio_range}

    def take(self, values: Dict[str, Any]) -> None:
        """Use ``values`` (another process's :meth:`values`, e.g. rank 0's, whose viewer a user changed)."""
        for name, value in _normalised(values).items():
            if value != _normalised(self.values())[name]:
                self._set(name, value)

    def _set(self, name: str, value: Any) -> None:
        if name == "tgt_prompt":
            self._prompt = self.prompt.value = value
        elif name == "guidance_scale":
            self.scale.value = value
        else:
            self.range_from.value, self.range_to.value = value

    def get_extra_state(self) -> Dict[str, Any]:
        # "configured" (this run's config) lets a resumed run tell a viewer change from a flag given now.
        return {**self.values(), "configured": self._configured}

    def set_extra_state(self, state: Optional[Dict[str, Any]]) -> None:
        """Resume: take back what the viewer changed during the run, unless a flag given now sets that value."""
        if not state or "configured" not in state:  # nothing saved, or saved without its config: keep the config
            return
        configured_then = _normalised(state["configured"])
        for name, value in _normalised(state).items():
            changed_in_viewer = value != configured_then[name]
            if changed_in_viewer and name not in self._typed_now:
                self._set(name, value)


def _normalised(values: Dict[str, Any]) -> Dict[str, Any]:
    """Control values in one form (a checkpoint may hold the range as a list), for comparison."""
    return {
        "tgt_prompt": str(values["tgt_prompt"]),
        "guidance_scale": float(values["guidance_scale"]),
        "ratio_range": tuple(float(v) for v in values["ratio_range"]),
    }
