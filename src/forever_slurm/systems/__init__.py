"""The outside systems, one module each: Slurm (slurm, jobside), subprocesses (proc), Traefik's YAML (traefik, traefik_schema, yamlish)."""
