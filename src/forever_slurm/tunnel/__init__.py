"""The web server's side: one supervised ssh port forward to Traefik on a login node."""
