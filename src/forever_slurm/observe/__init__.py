"""Reading, never writing: `status`, `check`, Traefik's access log and health, and job logs."""
