"""Static and offline checks of infra/: the image, docker compose, Terraform (run by `make test`)."""
