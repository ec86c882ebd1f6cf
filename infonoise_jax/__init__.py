"""infonoise_jax: diffusion training with information-guided noise schedules."""
