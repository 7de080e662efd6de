"""Scene representations: what differs between a nerfacto field and splatfacto's Gaussians, their edit models and
densification strategies, differentiable rendering, an oriented box in the scene's frame, and gsplat's rasteriser in
torch for CPUs."""
