"""The container image and the compose stack, run on a real Docker engine (`make image-test`)."""
