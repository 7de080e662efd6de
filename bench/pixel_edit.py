"""Where does a colour edit's spill past the object's outline come from? Edits of the images themselves, no scene.

The outcome matrix finds the toy world's pds edits fill the object as well as its no-ops do but carry its new colour a
pixel or two past the outline (bench/silhouette_parts.py: saturated pixels round the object 0.23 of its area on prior
v3 at scale 70, 0.16 on prior v2, 0.05 for the no-ops). This script takes the scene away and reads, for each view of
every colour edit of the world (12 pairs, ball and cube, 4 ring views), what the latent space lets an edit put in the
pixels:

- *through the VAE*: the world's goal image encoded (posterior mean) and decoded: what the latents can hold;
- *row space*: the smallest pixel change whose latent change, to first order, is the whole edit's: the edit (goal -
  source image) projected on the row space of the encoder's Jacobian (its posterior mean's) at the source (least
  squares). An objective on the latents reaches the pixels through that Jacobian's transpose (and, when it samples
  the posterior, its spread's, left out here), so this is the edit a latent objective can describe; the rest of the edit lies in the encoder's null space (16 x 16 x 4 latents for 32 x 32 x 3 pixels: two
  thirds of the dimensions);
- *latent fit*: the pixels themselves descended from the source image to the goal's own latent (the posterior's
  sample, 0.5 ||enc(x) - enc(goal)||^2, plain gradient descent at 1 / the Jacobian's largest squared singular value):
  a perfect prior's target, reached as a scene is, by the gradient;
- with ``--methods``: the pixels descended by the guidance itself (``GuidanceConfig``, the method's defaults but the
  prior and scale; each view's encoding a posterior sample, its t and noises from a generator of the view and step),
  which adds what the prior's score puts there.

The shares are those of bench/silhouette_parts.py, of the world's target object's pixels: saturated inside, dull
inside, absent inside, saturated outside within the silhouette's window (the spill). ``--vae`` reads another VAE folder
(the through-the-VAE, row-space and latent-fit readings only; ``--methods`` need the prior's own).

    python bench/pixel_edit.py --model-id toy_world/prior_v3                        # about 10 min on 2 cores
    python bench/pixel_edit.py --model-id toy_world/prior_v3 --methods pds sds --steps 200   # + 25 min a method
    python bench/pixel_edit.py --vae OUT/vae --stride 4 --fit-only [--posterior-mean]   # a 64 px VAE (train_prior --vae-only)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))


READ_AT = 32
"""The world's size in the scenes (captures, renders and the matrix's readings): a VAE of another size is read at it too."""
SHOWN_EVERY = 6
"""The picture shows every sixth colour edit read (ball red to green, ball blue to red, cube red to green, cube blue to
red)."""


def parts(images: np.ndarray, worlds: np.ndarray, azimuths) -> np.ndarray:
    """[4]: :func:`toy_world.outcome.silhouette_parts` of the images [N, H, W, 3] seen from the ring cameras at
    ``azimuths``, as bench/silhouette_parts.py reads the scenes' renders."""
    from toy_world.outcome import backgrounds, silhouette_parts
    from toy_world.world import ring_camera

    return silhouette_parts(images, worlds, backgrounds([ring_camera(azimuth) for azimuth in azimuths], images.shape[1]))


def encoder_jacobian(vae, image):
    """[latent elements, pixel elements]: the Jacobian of the VAE's posterior mean at ``image`` [3, H, W] in [0, 1]."""
    import torch

    shape = (1, *image.shape)
    # in chunks of rows: a 64 px VAE's 4096 rows at once would hold 4096 copies of the encoder's activations
    return torch.func.jacrev(lambda x: vae.encode(2 * x.view(shape) - 1).latent_dist.mean.flatten(), chunk_size=256)(image.flatten())


def row_space_edit(vae, source, goal):
    """[3, H, W]: the source image plus the edit (goal - source) projected on the row space of the encoder's
    Jacobian at the source, clamped to [0, 1]; and that Jacobian's largest singular value."""
    import torch

    jacobian = encoder_jacobian(vae, source)
    edit = (goal - source).flatten()
    coefficients = torch.linalg.lstsq(jacobian.T, edit[:, None]).solution
    return (source.flatten() + (jacobian.T @ coefficients).flatten()).clamp(0, 1).view(source.shape), float(torch.linalg.matrix_norm(jacobian, 2))


def largest_singular_value(vae, image, iterations: int = 50) -> float:
    """The largest singular value of the encoder's Jacobian (posterior mean) at ``image`` [3, H, W], by power iteration
    on J^T J (a Jacobian-vector and a vector-Jacobian product a step). Sets the VAE's attention to diffusers' plain
    processor: torch's fused CPU attention has no forward-mode derivative."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor

    vae.set_attn_processor(AttnProcessor())
    encode = lambda x: vae.encode(2 * x.unsqueeze(0) - 1).latent_dist.mean  # noqa: E731
    vector = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    value = 0.0
    for _ in range(iterations):
        vector = vector / vector.norm()
        _, jv = torch.func.jvp(encode, (image,), (vector,))
        _, pull = torch.func.vjp(encode, image)
        (vector,) = pull(jv)
        value = float(vector.norm().sqrt())
    return value


def latent_fit(vae, sources, goals, steps: int, rate: float, seed: int, mean: bool = False):
    """[N, 3, H, W]: ``sources`` descended by plain gradient descent (``rate``) on 0.5 ||enc(x) - enc(goal)||^2 per
    view (posterior samples, the goal's drawn once; with ``mean``, the posterior means: a deterministic encoder, as
    Stable Diffusion's practically is), clamped to [0, 1] after each step."""
    import torch

    def encode(images, draw: int):
        posterior = vae.encode(2 * images - 1).latent_dist
        return posterior.mean if mean else posterior.sample(generator=torch.Generator().manual_seed(draw))

    with torch.no_grad():
        target = encode(goals, seed)
    pixels = sources.clone().requires_grad_(True)
    for step in range(steps):
        latents = encode(pixels, seed + 1 + step)
        loss = 0.5 * (latents - target).pow(2).flatten(1).sum(1).sum()
        (grad,) = torch.autograd.grad(loss, pixels)
        with torch.no_grad():
            pixels -= rate * grad
            pixels.clamp_(0, 1)
    return pixels.detach()


def guided_edit(guidance, sources, prompts, steps: int, lr: float, view_seeds):
    """[N, 3, H, W]: ``sources`` optimised with Adam (rate ``lr``) on the guidance's loss for ``prompts`` (target,
    source); the source latents encoded once, each from a generator of its view, as the datamanager does."""
    import torch

    with torch.no_grad():
        x0_src = guidance.encode_images(sources, [torch.Generator().manual_seed(seed) for seed in view_seeds])
    pixels = sources.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=lr)
    for step in range(1, steps + 1):
        generators = [torch.Generator().manual_seed(100003 * step + seed) for seed in view_seeds]
        output = guidance(guidance.encode_images(pixels, generators), x0_src, *prompts, generator=generators)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)
    return pixels.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default="toy_world/prior_v3", help="the prior (its VAE unless --vae)")
    parser.add_argument("--vae", type=Path, help="another VAE folder (diffusers' AutoencoderKL) for the readings without the prior")
    parser.add_argument("--guidance-scale", type=float, default=70.0)
    parser.add_argument("--methods", nargs="*", default=[], help="pds, sds, dds: pixels descended by the guidance too (slow)")
    parser.add_argument("--steps", type=int, default=200, help="the latent fit's and the guided edits' steps")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's rate on the pixels of the guided edits")
    parser.add_argument("--stride", type=int, default=1, help="read every stride-th colour edit only (a 12-channel VAE's Jacobian is 3 times the work)")
    parser.add_argument("--posterior-mean", action="store_true", help="the latent fit on posterior means (a deterministic encoder), not samples")
    parser.add_argument("--fit-only", action="store_true", help="leave out the row space (its Jacobian: most of the time at 64 px)")
    parser.add_argument("--picture", type=Path, help="a picture: for every sixth edit read, the goal then each reading, a row each")
    args = parser.parse_args()
    if args.vae is not None and args.methods:
        parser.error("--methods guide with the prior's own VAE: leave out --vae")
    import torch
    from goal_darkening import AZIMUTHS, goal_images

    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from toy_world.outcome import save_views
    from toy_world.world import caption

    torch.manual_seed(0)
    views = len(AZIMUTHS)
    model = str(ROOT / args.model_id)
    prior = GuidanceConfig(model_id=model).setup(device="cpu")
    if args.vae is None:
        vae = prior.pipe.vae
    else:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae)
    vae.eval().requires_grad_(False)
    size = vae.config.sample_size  # the edits at the resolution of the VAE read
    goals, sources, _, _, rows = goal_images(size)
    as_images = lambda tensor: tensor.permute(0, 2, 3, 1).numpy()  # noqa: E731
    azimuths = [AZIMUTHS[k % views] for k in range(len(rows))]
    # a VAE of another size is read at its own and, each image's 2 x 2 (or k x k) means, at the world's 32 px as well
    goals_read = goal_images(READ_AT)[0] if size != READ_AT else None
    guidances = {method: GuidanceConfig(model_id=model, method=method, guidance_scale=args.guidance_scale).setup(device="cpu") for method in args.methods}
    readings = {}
    shown = {}

    def record(name: str, images, first: int, count: int) -> None:
        part = parts(as_images(images), as_images(goals[first : first + count]), azimuths[first : first + count])
        readings.setdefault(name, []).append(part)
        if goals_read is not None:
            shrunk = torch.nn.functional.avg_pool2d(images, size // READ_AT)
            part = parts(as_images(shrunk), as_images(goals_read[first : first + count]), azimuths[first : first + count])
            readings.setdefault(f"{name} (read at {READ_AT} px)", []).append(part)
        if (first // views) % SHOWN_EVERY == 0:
            shown.setdefault(name, []).extend(as_images(images))

    for pair, first in enumerate(range(0, len(rows), views)):
        if pair % args.stride:
            continue
        one = slice(first, first + views)
        with torch.no_grad():
            decoded = vae.decode(vae.encode(2 * goals[one] - 1).latent_dist.mean).sample / 2 + 0.5
        record("the goal through the VAE", decoded.clamp(0, 1), first, views)
        if args.fit_only:  # the rate from the Jacobian's largest singular value, by power iteration
            largest = [largest_singular_value(vae, sources[k]) for k in range(first, first + views)]
        else:
            projected, largest = zip(*(row_space_edit(vae, sources[k], goals[k]) for k in range(first, first + views)))
            record("row space: the edit a latent objective can describe", torch.stack(projected), first, views)
        fitted = latent_fit(vae, sources[one], goals[one], args.steps, 1.0 / max(largest) ** 2, seed=1000 * pair, mean=args.posterior_mean)
        draws = "posterior means" if args.posterior_mean else "posterior samples"
        record(f"latent fit: {args.steps} steps to the goal's own latent ({draws})", fitted, first, views)
        shape, source, target = rows[first]
        for method, guidance in guidances.items():
            edited = guided_edit(guidance, sources[one], (caption(target, shape), caption(source, shape)), args.steps, args.lr, range(first, first + views))
            record(f"{method} at scale {args.guidance_scale:g}: {args.steps} Adam steps on the pixels", edited, first, views)
        print(f"{shape} {source} -> {target}: " + "; ".join(f"{name.split(':')[0]}{f' (read at {READ_AT} px)' if name.endswith('px)') and ':' in name else ''} " + " / ".join(f"{v:.2f}" for v in values[-1]) for name, values in readings.items()), flush=True)
    vae_name = args.vae or f"{Path(args.model_id).name}'s VAE"
    print(f"\n{vae_name}, {len(readings['the goal through the VAE'])} colour edits, {views} ring views each")
    print("| images | inside: saturated / dull / absent | saturated outside (spill) |\n|---|---|---|")
    for name, values in readings.items():
        mean = np.mean(values, 0)
        print(f"| {name} | {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f} | {mean[3]:.3f} (min {np.min(values, 0)[3]:.2f}, max {np.max(values, 0)[3]:.2f}) |")
    if args.picture is not None:
        picked = [k for k in range(0, len(rows), views * args.stride) if (k // views) % SHOWN_EVERY == 0]
        picked = [k + view for k in picked for view in range(views)]
        grid = [as_images(goals[picked])] + [np.stack(images) for images in shown.values()]
        save_views([list(row[i : i + views]) for i in range(0, len(picked), views) for row in grid], args.picture)


if __name__ == "__main__":
    main()
