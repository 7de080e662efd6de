"""gsplat densification strategies for an edited splatfacto scene: culling alone (the official splat edit), or
splatfacto's densification restarted at the edit's first step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.base import Strategy
from gsplat.strategy.ops import remove


@dataclass
class CullingStrategy(Strategy):
    """Gaussian densification as the official PDS splat edit runs it: no splitting, duplication or opacity
    reset (its steps continue past the source's ``stop_split_at``); every ``refine_every`` steps, Gaussians
    with opacity below ``prune_opa`` or a largest scale above ``prune_scale3d`` (x scene scale) are removed."""

    prune_opa: float = 0.1
    prune_scale3d: float = 0.5
    refine_every: int = 100
    absgrad: bool = False
    """Read by splatfacto's render call; culling needs no screen-space gradients."""
    movable: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    """Which Gaussians (by their means [N, 3]) may be culled; all when None (an edit's region sets it)."""

    def initialize_state(self, scene_scale: float = 1.0) -> Dict[str, Any]:
        return {"scene_scale": scene_scale}

    @torch.no_grad()
    def step_post_backward(self, params, optimizers, state, step: int, info, packed: bool = False) -> int:
        """Cull after the optimizer step of every ``refine_every``-th step; returns how many Gaussians went."""
        if step % self.refine_every:
            return 0
        too_faint = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        too_big = torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
        culled = too_faint | too_big
        if self.movable is not None:
            culled &= self.movable(params["means"])
        if culled.any():
            remove(params=params, optimizers=optimizers, state=state, mask=culled)
        return int(culled.sum())


@dataclass
class RestartedDensification(DefaultStrategy):
    """splatfacto's own densification (gsplat's ``DefaultStrategy``) restarted at the edit's step 0, without the opacity
    reset of step 0: gsplat resets every opacity to twice ``prune_opa`` whenever ``step % reset_every == 0``, which at
    a finished scene's first edit step would clamp its opacities (0.98 -> 0.2) before anything is edited.

    With ``movable`` (an edit's region), only the Gaussians it lets move are split, duplicated, pruned or have their
    opacity reset; the others keep their rows exactly."""

    movable: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    """Which Gaussians (by their means [N, 3]) densification may touch; all when None."""

    def step_post_backward(self, params, optimizers, state, step: int, info, packed: bool = False):  # type: ignore[override]
        if step == 0:  # only the screen-space statistics, as at any step without refinement or reset
            if step < self.refine_stop_iter:
                self._update_state(params, state, info, packed=packed)
            return
        if self.movable is None:
            super().step_post_backward(params, optimizers, state, step, info, packed=packed)
            return
        if step >= self.refine_stop_iter:
            return
        # gsplat's schedule, each refinement and reset limited to the movable Gaussians
        self._update_state(params, state, info, packed=packed)
        if step > self.refine_start_iter and step % self.refine_every == 0 and step % self.reset_every >= self.pause_refine_after_reset:
            outside = ~self.movable(params["means"].detach())
            state["grad2d"][outside] = 0  # no screen-space gradient or size outside: none is split or duplicated
            if state.get("radii") is not None:
                state["radii"][outside] = 0
            before = len(params["means"])
            _, n_split = self._grow_gs(params, optimizers, state, step)
            self._remove_new_outside(params, optimizers, state, len(params["means"]) - before + n_split)
            self._prune_gs(params, optimizers, state, step)
            state["grad2d"].zero_()
            state["count"].zero_()
            if self.refine_scale2d_stop_iter > 0:
                state["radii"].zero_()
        if step % self.reset_every == 0:
            self._reset_movable_opacities(params, optimizers)

    @torch.no_grad()
    def _remove_new_outside(self, params, optimizers, state, added: int) -> None:
        """Remove the Gaussians the growth just added (the last ``added`` rows: gsplat appends duplicates and split
        children) that fell outside the region: a child split off across its boundary would stay frozen there."""
        if added <= 0:
            return
        outside = ~self.movable(params["means"].detach())
        outside[: len(outside) - added] = False
        if outside.any():
            remove(params=params, optimizers=optimizers, state=state, mask=outside)

    @torch.no_grad()
    def _reset_movable_opacities(self, params, optimizers) -> None:
        """gsplat's opacity reset (to at most twice ``prune_opa``, the optimizer's moments of those rows cleared), for
        the movable Gaussians only."""
        opacities = params["opacities"]
        rows = self.movable(params["means"].detach())
        ceiling = torch.logit(torch.tensor(self.prune_opa * 2.0)).item()
        opacities[rows] = opacities[rows].clamp(max=ceiling)
        for moments in optimizers["opacities"].state.get(opacities, {}).values():
            if torch.is_tensor(moments) and moments.shape == opacities.shape:
                moments[rows] = 0

    @torch.no_grad()
    def _prune_gs(self, params, optimizers, state, step: int) -> int:
        """gsplat's rule (opacity below ``prune_opa``; after the first reset, a largest scale above ``prune_scale3d``, and
        before ``refine_scale2d_stop_iter`` a screen radius above ``prune_scale2d``), for the movable Gaussians only."""
        if self.movable is None:
            return super()._prune_gs(params, optimizers, state, step)
        pruned = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        if step > self.reset_every:
            pruned |= torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter:
                pruned |= state["radii"] > self.prune_scale2d
        pruned &= self.movable(params["means"].detach())
        if pruned.any():
            remove(params=params, optimizers=optimizers, state=state, mask=pruned)
        return int(pruned.sum())
