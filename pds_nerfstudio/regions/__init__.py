"""Edit only what you point at: a 3D box or per-image masks that limit where an edit's gradient lands and what moves."""
