"""forever-slurm: keep web services up on Slurm by running N jobs per service behind Traefik."""

__version__ = "0.1.0"
