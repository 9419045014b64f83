"""`python -m analyses NAME [--scale paper|tiny] [--out DIR] [--device D] [--data-root DIR] [--seeds N] [--dry-run]`
(`python -m analyses list` lists the recipes): see zsq_probe/cli/recipe.py."""

import sys

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main())
