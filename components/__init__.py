"""Pipeline steps: one module per step, each a library function ``run`` and a CLI ``main(argv)``."""
