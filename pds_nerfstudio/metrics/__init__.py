"""Measuring an edit: CLIP and LPIPS metrics, the views they are taken at, and the report."""
