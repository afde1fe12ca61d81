"""Recipes that need a GPU: ``cifar10`` runs the published CIFAR-10 setup (``cifar10.yaml``) through the
pipeline's steps (``python -m benchmarks.gpu.cifar10``)."""
