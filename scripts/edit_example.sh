#!/usr/bin/env bash
# Set up, reconstruct a scene with nerfacto, edit it with pds, export the edited scene as a point cloud
# (--demo: also a splatfacto reconstruction, edited with pds and exported as Gaussian splats).
#
#   bash scripts/edit_example.sh "a photo of a poster of a polar bear"
#       nerfstudio's "poster" capture and Stable Diffusion 1.5 from the hub: needs the network; a CUDA GPU
#       makes it take tens of minutes instead of days.
#   bash scripts/edit_example.sh --demo
#       offline, CPU, a few minutes: a scene of the toy world (a yellow cube on a grey floor) edited to a green
#       cube with the project's trained toy-world priors at the toy world's setting (toy_world.outcome.TOY_GUIDANCE:
#       nerfacto with toy_world/prior_v2 at guidance scale 70, splatfacto with toy_world/prior at the paper's 100),
#       then a splatfacto reconstruction of the same scene (started from its sparse points) edited alike. The pair
#       is one of the outcome matrix's (docs/outcome_matrix.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

if [ "${1:-}" = "--demo" ]; then
  export HF_HUB_OFFLINE=1 TORCH_HOME="$PWD/demo/torch_home"
  python - <<'PY'
from pathlib import Path
from toy_world.models import seed_torch_home
from toy_world.outcome import SPARSE_POINTS
from toy_world.world import Thing, write_scene
demo = Path("demo")
write_scene(demo / "scene", Thing("yellow", "cube"), num_views=10, size=32, sparse_points=SPARSE_POINTS)
seed_torch_home(demo / "torch_home")
PY
  tiny_field=$(python -c 'from toy_world.runs import TINY_NERFACTO_FLAGS; from toy_world.outcome import SOURCE_FLAGS; print(" ".join(TINY_NERFACTO_FLAGS + SOURCE_FLAGS))')
  edit_flags=$(python -c 'from toy_world.outcome import EDIT_FLAGS; print(" ".join(EDIT_FLAGS))')
  # the toy world's guidance per representation: --pipeline.guidance.model-id and --pipeline.guidance.guidance-scale
  guidance() { python -c "from pathlib import Path; from toy_world.outcome import toy_guidance_flags; print(' '.join(toy_guidance_flags('$1', Path('toy_world'))))"; }
  nerfacto_guidance=$(guidance nerfacto)
  splatfacto_guidance=$(guidance splatfacto)
  # shellcheck disable=SC2086
  ns-train nerfacto --data demo/scene --output-dir demo/outputs --max-num-iterations 400 $tiny_field
  # a typical edit of the outcome matrix (docs/outcome_matrix.md; on nerfacto 0.88-0.95 / 29.6-32.0 dB / 0.95 over
  # three seeds, the median pds edit 0.96 / 30.7 / 0.92): the cube turns green, the floor kept (renders/compare.png)
  # shellcheck disable=SC2086
  ns-train pds --load-dir demo/outputs/scene --output-dir demo/outputs --max-num-iterations 200 \
    --pipeline.src-prompt "a photo of a yellow cube on a grey floor" \
    --pipeline.tgt-prompt "a photo of a green cube on a grey floor" $nerfacto_guidance \
    $edit_flags --machine.device-type cpu --vis tensorboard --viewer.quit-on-train-completion True
  run=$(ls -d demo/outputs/scene/pds/*/ | tail -n 1)
  ns-export pointcloud --load-config "$run/config.yml" --output-dir demo/export --num-points 2000 \
    --remove-outliers False --normal-method open3d
  echo "edited run: $run (captured | edit of 4 views: $run/renders/compare.png), point cloud: demo/export/point_cloud.ply"

  # An edit of a splatfacto reconstruction. gsplat's kernels need CUDA: on this CPU, nerfstudio's
  # ns-train runs splatfacto through pds_nerfstudio.scenes.splat_cpu (with a GPU: plain `ns-train splatfacto`).
  # The source starts from the scene's sparse_pc.ply (as from a capture's COLMAP points) and trains at full size;
  # splatfacto's learning rates are far below nerfacto's, hence 500 edit steps (docs/toy_world.md).
  splat_flags=$(python -c 'from toy_world.runs import TINY_SPLATFACTO_FLAGS; from toy_world.outcome import SPLAT_SOURCE_FLAGS; print(" ".join(TINY_SPLATFACTO_FLAGS + SPLAT_SOURCE_FLAGS))')
  # shellcheck disable=SC2086
  python -m pds_nerfstudio.cli.splat_cpu splatfacto --data demo/scene --output-dir demo/splat-outputs \
    --max-num-iterations 400 $splat_flags
  # shellcheck disable=SC2086
  ns-train pds --load-dir demo/splat-outputs/scene --output-dir demo/splat-outputs --max-num-iterations 500 \
    --pipeline.src-prompt "a photo of a yellow cube on a grey floor" \
    --pipeline.tgt-prompt "a photo of a green cube on a grey floor" $splatfacto_guidance \
    $edit_flags --machine.device-type cpu --vis tensorboard --viewer.quit-on-train-completion True
  run=$(ls -d demo/splat-outputs/scene/pds/*/ | tail -n 1)
  ns-export gaussian-splat --load-config "$run/config.yml" --output-dir demo/splat-export
  echo "edited splat run: $run (captured | edit: $run/renders/compare.png), splats: demo/splat-export/splat.ply"
  exit 0
fi

prompt="${1:?usage: bash scripts/edit_example.sh \"a photo of ...\"   (or --demo)}"
ns-download-data nerfstudio --capture-name poster --save-dir data
ns-train nerfacto --data data/nerfstudio/poster --pipeline.model.use-appearance-embedding False \
  --vis viewer+tensorboard --viewer.quit-on-train-completion True
ns-train pds --load-dir outputs/poster --pipeline.tgt-prompt "$prompt" \
  --vis viewer+tensorboard --viewer.quit-on-train-completion True
run=$(ls -d outputs/poster/pds/*/ | tail -n 1)
ns-export pointcloud --load-config "$run/config.yml" --output-dir exports/poster --normal-method open3d
echo "edited run: $run (renders in $run/renders), point cloud: exports/poster/point_cloud.ply"
