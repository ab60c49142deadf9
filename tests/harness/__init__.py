"""Test harness: a throwaway local Slurm cluster and the pytest fixtures that share it."""
