"""The pretrained networks an edit consults: Stable Diffusion (loading and its checks, the guidance that turns it into
distillation gradients, DreamBooth personalisation) and LPIPS."""
