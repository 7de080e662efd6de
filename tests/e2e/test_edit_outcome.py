"""Edits that do what the prompt says, measured with the trained toy-world priors through the real ``ns-train``.

A tiny nerfacto of a red ball on a grey floor is edited to "a blue ball" with ``pds``, guided as the toy world's
nerfacto edits are (prior v2 at scale 70, :data:`toy_world.outcome.TOY_GUIDANCE`); the real ``pds-eval`` with the
trained toy-world CLIP (``toy_world/clip``) reads it, ``pds-refine`` continues it, ``pds-dreambooth`` personalises the
prior to the scene before an edit, and pnr's automatic eta is read for no edit, a colour edit and a shape edit. What
pds edits do across the world (every colour pair, both shapes, both representations, against sds and dds) is the
outcome matrix's (bench/outcome_matrix.py); its slice in the default run is tests/e2e/test_matrix_slice.py. The
thresholds here are measurements with a margin: the pds edit's and refine's of 2026-12-08 (given in each test), the
others of docs/toy_world.md. pds-dreambooth and pnr's eta keep the
committed prior (``toy_world/prior``) at the method's scale 100, with which they were measured (README, "The toy
world's setting").

Every test here is in the default run. The nerfacto source is the harness's seeded one (nerfstudio's ray-sampling
process seeded, :mod:`toy_world.reproducible_ns_train`): two fresh sources and their edits with the committed prior
scored effect 0.949 and 0.946, identity 30.8 and 30.9 dB; with prior v2 at 70, 0.98 / 34.1 dB and 0.98 / 33.3 dB
(2026-12-08). (Unseeded, one fresh source in six drifted under the same edit,
the whole scene red, then orange: effect 0.27, identity 12.3 dB after 200 steps; docs/toy_world.md.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from pnr_nerfstudio.perturbation import PerturbationConfig, loss_change, select_eta
from toy_world import CLIP, PRIOR
from toy_world.models import seed_torch_home
from toy_world.outcome import (
    EDIT_FLAGS,
    SOURCE_FLAGS,
    SOURCE_STEPS,
    SPARSE_POINTS,
    denoising_loss,
    measure,
    outcome_edit_flags,
    toy_guidance_flags,
    training_views,
)
from toy_world.runs import (
    COMMAND_TIMEOUT,
    offline_env,
    run_pds_eval,
    run_tiny_edit,
    train_tiny_nerfacto,
)
from toy_world.world import Thing, caption, write_scene

STEPS = 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("outcome")
    torch_home = seed_torch_home(work / "torch_home")
    scene = write_scene(work / "red-ball", Thing("red", "ball"), num_views=10, size=32, sparse_points=SPARSE_POINTS)
    source = train_tiny_nerfacto(scene, work / "outputs", torch_home, steps=SOURCE_STEPS, extra_args=SOURCE_FLAGS)
    return work, torch_home, source


@pytest.fixture(scope="module")
def source_views(world):
    """The nerfacto source's renders of its training views and their captured images, rendered once for every test."""
    return training_views(world[2] / "config.yml")


@pytest.fixture(scope="module")
def pds_edit(world) -> Path:
    work, torch_home, source = world
    flags = [*EDIT_FLAGS, *toy_guidance_flags("nerfacto"), *outcome_edit_flags("red", "blue")]
    return run_tiny_edit("pds", source, work / "edit", torch_home, STEPS, flags)[0]


@pytest.fixture(scope="module")
def pds_outcome(pds_edit, source_views):
    sources, captured = source_views
    return measure(training_views(pds_edit / "config.yml")[0], sources, captured, "blue")


def _pds_eval(world, run: Path) -> dict:
    """``pds-eval RUN --clip-models toy_world/clip`` (LPIPS with AlexNet, the harness's random trunk: only whether it
    is 0 means something); returns metrics.json's CLIP and LPIPS numbers."""
    work, torch_home, _ = world
    metrics = run_pds_eval(run, run / "evaluation", torch_home, ["--clip-models", str(CLIP), "--lpips-nets", "alex"], work)[0]
    metrics = metrics["metrics"]
    return {**metrics["clip"][str(CLIP)], "lpips": metrics["lpips"]["alex"]}


def test_pds_eval_with_the_toy_clip_reads_the_edit(world, pds_edit):
    """The real pds-eval with the trained toy-world CLIP. Measured: the 200-step edit scores directional similarity
    0.83 and text-image similarity to "a blue ball" 0.86 (prior v2 at 70, 2026-12-08; with the committed prior at
    100, docs/toy_world.md: 0.85 and 0.82). Unedited (the source's own renders)
    the directional similarity is 0 at every view (tests/toy_world/test_world.py), which fails the threshold."""
    edited = _pds_eval(world, pds_edit)
    assert edited["directional_similarity"]["value"] >= 0.5 and edited["directional_similarity"]["undefined_views"] == 0
    assert edited["text_image_similarity"]["value"] >= 0.5
    assert edited["lpips"]["value"] > 0


def test_pds_refine_after_pds_keeps_the_edit_and_the_identity(world, pds_edit, pds_outcome, source_views):
    """pds-refine (SDEdit of the views towards the edit's prompt, nerfacto's reconstruction losses) from the pds edit,
    200 steps, guided by the edit's prior (prior v2; SDEdit at the release's scale 15). Measured (2026-12-08): effect
    0.98 -> 0.99, identity 34.1 -> 36.3 dB (another fresh source: 33.3 -> 35.8). Broken:

    - refined towards the source's prompt ("a red ball"): the effect fell to 0.57, which fails the first check (with
      the committed prior at 100 it fell by 0.06 only, docs/toy_world.md);
    - a refinement that changes nothing keeps the identity where it was, which fails the second (it asks 1 dB of the
      2.2-2.5 measured).

    SDEdit started from the captured images instead of the edit's renders is not caught here with prior v2: it turns
    the captured views' red ball blue as well (0.94, 37.4 dB; with the committed prior the effect fell to 0.80).
    tests/e2e/test_refine.py reads what SDEdit starts from."""
    work, torch_home, _ = world
    refined, _ = run_tiny_edit("pds-refine", pds_edit, work / "refine", torch_home, STEPS, EDIT_FLAGS)
    sources, captured = source_views
    before = pds_outcome
    after = measure(training_views(refined / "config.yml")[0], sources, captured, "blue")
    assert after.effect >= max(0.7, before.effect - 0.1), (before, after)
    assert after.identity_psnr >= before.identity_psnr + 1.0, (before, after)  # refined: more of the rest kept


INSTANCE_PROMPT = "a photo of a sks red ball on a grey floor"


def test_pds_dreambooth_personalises_the_prior_and_an_edit_with_it_works(world, source_views):
    """pds-dreambooth (full, the official 800 steps and learning rate, 32 px, 20 class images for time) on the scene's
    training views. Measured (docs/toy_world.md): the denoising loss of the views under the instance prompt falls
    from 0.122 to 0.046 (50 class images); pds with the personalised prior from the instance prompt to "a blue ball"
    scores effect 1.00, identity 21.6 dB (this test's 20 class images, 2026-12-07: 0.97, 22.2 dB). The thresholds
    (0.8, the outcome goal's effect, and 18 dB) sit 3.6 dB or more below those; the 14 dB asked before let a whole
    floor turned lavender pass (14.9 dB, issue 38). (To "a sks blue ball" it did nothing, effect 0.02: the toy text
    encoder never saw the identifier and cannot compose it with another colour; docs/toy_world.md.)"""
    work, torch_home, source = world
    personalised = work / "dreambooth"
    command = [
        str(Path(sys.executable).parent / "pds-dreambooth"), str(source), "--model-id", str(PRIOR), "--device", "cpu",
        "--instance-prompt", INSTANCE_PROMPT, "--class-prompt", caption("red", "ball"), "--resolution", "32",
        "--num-class-images", "20", "--class-image-steps", "20", "--output-dir", str(personalised),
    ]  # fmt: skip
    result = subprocess.run(command, env=offline_env(torch_home), cwd=work, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    sources, captured = source_views
    before, after = denoising_loss(str(PRIOR), captured, INSTANCE_PROMPT), denoising_loss(str(personalised), captured, INSTANCE_PROMPT)
    assert after <= 0.6 * before, (before, after)

    flags = [*EDIT_FLAGS, "--pipeline.guidance.model-id", str(personalised), "--pipeline.src-prompt", INSTANCE_PROMPT,
             "--pipeline.tgt-prompt", caption("blue", "ball")]  # fmt: skip
    run, _ = run_tiny_edit("pds", source, work / "edit-personalised", torch_home, STEPS, flags)
    outcome = measure(training_views(run / "config.yml")[0], sources, captured, "blue")
    assert outcome.effect >= 0.8, outcome
    assert outcome.identity_psnr >= 18.0, outcome


TOY_D_MIN = 2e5
"""d_min for the toy prior's selection losses. The released 1000 was set for MVDream's; the toy prior's are 5e5 to 2e6
in the same units (per 4x32x32 latent), and with no edit their dL varies by about 6e4 from draw to draw, so with the
released d_min eta is 0 or eta_max by the draw's sign of dL. 2e5, about three times that spread, lets eta tell
"no change" (eta near eta_max / 2) from "falls" (0) and "rises" (above eta_max / 2)."""


def test_pnr_eta_is_zero_for_a_colour_edit_and_above_zero_with_no_edit_or_a_shape_edit(world):
    """Alg. 2 with the released 4 views a step and 50 selection steps, d_min typed as :data:`TOY_D_MIN`. Measured
    (docs/toy_world.md, the test's source, --machine.seed 42, 1 and 7; fall = -dL / the first window's mean):

    - no edit ("a red ball" to itself): falls -0.12, 0.01, 0.09 (dL +6.2e4, -5.1e3, -5.8e4), eta 0.36, 0.29, 0.23;
    - colour ("a blue ball"): falls 0.84, 0.76, 0.84 (dL -1.3e6, -1.4e6, -1.5e6), eta 0;
    - shape ("a red cube"): falls -0.28, -0.11, -0.36 (dL +2.4e5, +1.1e5, +3.0e5), eta 0.47, 0.40, 0.49.

    The shape's eta was above no edit's with each seed, but by about two draws' spread of dL, so that order is reported,
    not asserted. Each eta is the one the run chose, read from its checkpoint, and must be Alg. 2's value of the losses
    it recorded with the typed d_min."""
    work, torch_home, source = world
    window = PerturbationConfig().loss_window  # the released 10
    etas, falls = {}, {}
    for edit, (colour, shape) in {"none": ("red", "ball"), "colour": ("blue", "ball"), "shape": ("red", "cube")}.items():
        flags = [*EDIT_FLAGS, "--pipeline.guidance.model-id", str(PRIOR), *outcome_edit_flags("red", colour, "ball", target_shape=shape),
                 "--pipeline.result-views", "1", "--pipeline.perturbation.d-min", str(TOY_D_MIN),
                 "--pipeline.protocol", "objects"]  # fmt: skip
        run_dir, result = run_tiny_edit("pnr", source, work / f"pnr-{edit}", torch_home, 51, flags)
        used = re.search(r"^Step 0 uses: tgt prompt '([^']*)'", result.stdout, re.M)  # what the first step used
        assert used is not None and used.group(1) == caption(colour, shape), (edit, used)
        state = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["pipeline"]
        losses = state["eta_selection_losses"].tolist()
        etas[edit] = float(state["eta"])
        assert etas[edit] == pytest.approx(select_eta(losses, window, d_min=TOY_D_MIN), abs=1e-12), (edit, etas)
        falls[edit] = -loss_change(losses, window) / (sum(losses[:window]) / window)  # dL over the first window's mean
    assert etas["colour"] == 0.0 and falls["colour"] >= 0.5, (etas, falls)
    assert etas["none"] > 0.0 and abs(falls["none"]) <= 0.25, (etas, falls)
    assert etas["shape"] > 0.0 and falls["shape"] <= falls["colour"] - 0.3, (etas, falls)
