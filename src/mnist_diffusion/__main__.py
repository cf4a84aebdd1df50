"""`python -m mnist_diffusion ...` (also what `torchrun -m mnist_diffusion` runs)."""

from mnist_diffusion.cli import main

raise SystemExit(main())
