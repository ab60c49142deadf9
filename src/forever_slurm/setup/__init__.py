"""`config` and `uninstall`: the prompts, the steps after them, supervision (units), the Traefik binary and ssh setup."""
