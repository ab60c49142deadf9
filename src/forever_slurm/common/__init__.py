"""What every room shares: errors, settings and .env files, service folders, safe files, and the one check per value."""
