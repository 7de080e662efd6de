"""The PDS math: score-distillation gradients (SDS, DDS, PDS) in latent space. Torch only: no diffusers, no nerfstudio."""
